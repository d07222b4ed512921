//! `nas-pipe completions`: prints a shell completion script, generated from the same clap
//! definitions the binary parses with.

use clap::CommandFactory as _;

use crate::error::{Result, exit};

/// Print a shell completion script for nas-pipe to stdout.
///
/// bash: `nas-pipe completions bash > ~/.local/share/bash-completion/completions/nas-pipe`;
/// zsh: `nas-pipe completions zsh > "${fpath[1]}/_nas-pipe"`;
/// fish: `nas-pipe completions fish > ~/.config/fish/completions/nas-pipe.fish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

pub fn run(args: &Args) -> Result<i32> {
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "nas-pipe", &mut out);
    super::common::print(&String::from_utf8_lossy(&out))?;
    Ok(exit::OK)
}
