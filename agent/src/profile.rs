//! `kscope profile`: CPU sampling with symbolized kernel and user stacks.

/// `kscope profile`'s options.
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {}

pub fn run(_args: &ProfileArgs) -> anyhow::Result<()> {
    anyhow::bail!("kscope profile is not built yet")
}
