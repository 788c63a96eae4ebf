//! Shell completions and man pages, generated from a binary's clap
//! definition (`vigil`, `vigilctl` and `vigil-testnet` each have a
//! `completions SHELL` and a `man` subcommand that call these), so they
//! never drift from the flags the binary takes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Command;
use clap_complete::Shell;

/// Writes `cmd`'s completion script for `shell` to `out`.
pub fn completions(mut cmd: Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Writes `NAME.1` and one page per subcommand (`NAME-SUB.1`,
/// `NAME-SUB-SUBSUB.1`) into `dir` (created if needed); returns the files.
pub fn man_pages(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = cmd;
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, cmd.get_name(), dir, &mut written)?;
    Ok(written)
}

/// The top-level page of `cmd` (for `man` without `--out`).
pub fn man_page(cmd: Command, out: &mut dyn Write) -> Result<()> {
    clap_mangen::Man::new(cmd).render(out)?;
    Ok(())
}

fn write_pages(cmd: &Command, name: &str, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let page = cmd.clone().name(name.to_owned());
    let file = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    std::fs::write(&file, buf).with_context(|| format!("cannot write {}", file.display()))?;
    written.push(file);
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn demo() -> Command {
        Command::new("demo")
            .about("A demo")
            .arg(Arg::new("data-dir").long("data-dir"))
            .subcommand(
                Command::new("run")
                    .about("Run it")
                    .subcommand(Command::new("fast")),
            )
    }

    #[test]
    fn a_page_per_subcommand_and_completions_name_the_flags() {
        let tmp = tempfile::tempdir().unwrap();
        let files = man_pages(demo(), tmp.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["demo.1", "demo-run.1", "demo-run-fast.1"]);
        let top = std::fs::read_to_string(&files[0]).unwrap();
        assert!(top.contains(".TH demo") && top.contains("data\\-dir"), "{top}");
        let mut out = Vec::new();
        completions(demo(), Shell::Bash, &mut out);
        let script = String::from_utf8(out).unwrap();
        assert!(
            script.contains("--data-dir") && script.contains("run"),
            "{script}"
        );
    }
}
