// Test program for symbol-resolver: Rust names (mangled), an always-inlined helper.

#[inline(never)]
fn compute(x: u64) -> u64 {
    helper(x) * 3 + 1
}

#[inline(always)]
fn helper(x: u64) -> u64 {
    x.wrapping_mul(2654435761) ^ (x >> 7)
}

pub mod inner {
    #[inline(never)]
    pub fn work(values: &[u64]) -> u64 {
        let mut sum = 0u64;
        for &v in values {
            sum = sum.wrapping_add(super::compute(v));
        }
        sum
    }
}

fn main() {
    let values: Vec<u64> = std::env::args().map(|a| a.len() as u64).collect();
    println!("{}", inner::work(&values));
}
