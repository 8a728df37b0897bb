use std::borrow::Cow;

/// Whether [`demangle`] may change the name. Both schemes start with `_Z` or `_R`
/// (`__Z`/`__R` where the platform prefixes an underscore); checking first keeps C names,
/// the vast majority in kernel and libc stacks, free of demangling attempts.
pub(crate) fn may_be_mangled(name: &str) -> bool {
    ["_Z", "_R", "__Z", "__R"].iter().any(|prefix| name.starts_with(prefix))
}

/// Demangles Rust (legacy and v0) and Itanium C++ names; other names come back unchanged.
pub(crate) fn demangle(name: &str) -> Cow<'_, str> {
    if !may_be_mangled(name) {
        return Cow::Borrowed(name);
    }
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        // The alternate form leaves out the legacy `::h<hash>` suffix and v0 crate
        // disambiguators: stable across rebuilds, as GNU addr2line -C prints them.
        return Cow::Owned(format!("{rust:#}"));
    }
    if name.starts_with("_Z")
        && let Ok(symbol) = cpp_demangle::Symbol::new(name.as_bytes())
        && let Ok(demangled) = symbol.demangle()
    {
        return Cow::Owned(demangled);
    }
    Cow::Borrowed(name)
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn rust_legacy_v0_cpp_and_c() {
        assert_eq!(demangle("_ZN1r7compute17he9e9c2245c3ede51E"), "r::compute");
        assert_eq!(demangle("_RNvNtCs6GmmlP4bgsG_1r5inner4work"), "r::inner::work");
        assert_eq!(demangle("_ZN5space3fooEibc"), "space::foo(int, bool, char)");
        assert_eq!(demangle("tcp_retransmit_skb"), "tcp_retransmit_skb");
        assert_eq!(demangle("_Zgarbage"), "_Zgarbage");
        assert_eq!(demangle("Rust"), "Rust");
    }
}
