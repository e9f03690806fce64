//! `cargo xtask feature-pins [--write]`: the crates `xtask/Cargo.toml` names only for their
//! features, generated from `cargo tree` and checked so the list cannot go stale.
//!
//! `cargo test --workspace` builds the dev-dependencies (criterion, proptest), which turn
//! on features of crates Burn also uses; `cargo xtask` (`cargo run -p xtask`) does not,
//! so without help each would build Burn with its own feature set: twice. Asking for the
//! same features from xtask makes both resolve alike. Which crates and features that takes
//! is computed here: the features `cargo test --workspace` resolves, against those
//! `cargo run -p xtask` resolves in a copy of the workspace without the pins.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct PinsArgs {
    /// Rewrite the pinned block in xtask/Cargo.toml instead of checking it.
    #[arg(long)]
    pub write: bool,
}

const BEGIN: &str = "# feature-pins: begin";
const END: &str = "# feature-pins: end";

/// Every package's version and features, as `cargo tree` resolves them for `args`.
type Resolved = BTreeMap<String, (String, BTreeSet<String>)>;

fn resolved(workspace: &Path, args: &[&str]) -> Result<Resolved> {
    let out = crate::backend::cargo()
        .current_dir(workspace)
        .arg("tree")
        .args(args)
        .args(["--prefix", "none", "--format", "{p}|{f}"])
        .output()
        .context("cannot run cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut packages = Resolved::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        let mut words = package.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let features = features.trim_end_matches(" (*)");
        let entry = packages
            .entry(name.to_string())
            .or_insert_with(|| (version.trim_start_matches('v').to_string(), BTreeSet::new()));
        entry.1.extend(
            features
                .split(',')
                .filter(|f| !f.is_empty())
                .map(String::from),
        );
    }
    Ok(packages)
}

/// The pinned block for the crates whose features differ between the two resolutions.
fn pins(test: &Resolved, xtask: &Resolved) -> String {
    let mut lines = vec![BEGIN.to_string()];
    for (name, (version, features)) in test {
        let Some((_, built)) = xtask.get(name) else {
            continue;
        };
        if features == built {
            continue;
        }
        let major: Vec<&str> = version.split('.').collect();
        let req = if major[0] == "0" {
            format!("{}.{}", major[0], major[1])
        } else {
            major[0].to_string()
        };
        let mut named: Vec<&str> = features
            .iter()
            .map(String::as_str)
            .filter(|f| *f != "default")
            .collect();
        named.sort();
        let list = named
            .iter()
            .map(|f| format!("\"{f}\""))
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(match (features.contains("default"), named.is_empty()) {
            (true, true) => format!("{name} = \"{req}\""),
            (true, false) => format!("{name} = {{ version = \"{req}\", features = [{list}] }}"),
            (false, _) => format!(
                "{name} = {{ version = \"{req}\", default-features = false, features = [{list}] }}"
            ),
        });
    }
    lines.push(END.to_string());
    lines.join("\n")
}

/// The manifest with its pinned block replaced by `block`.
fn with_block(manifest: &str, block: &str) -> Result<String> {
    let (Some(start), Some(end)) = (manifest.find(BEGIN), manifest.find(END)) else {
        bail!("xtask/Cargo.toml has no `{BEGIN}` ... `{END}` block");
    };
    Ok(format!(
        "{}{block}{}",
        &manifest[..start],
        &manifest[end + END.len()..]
    ))
}

/// A copy of the tracked files of the workspace, for resolving without the pins.
fn copy_workspace(root: &Path, to: &Path) -> Result<()> {
    let out = Command::new("git")
        .current_dir(root)
        .args(["ls-files", "-z"])
        .output()
        .context("cannot run git ls-files")?;
    for file in out.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = PathBuf::from(String::from_utf8_lossy(file).into_owned());
        let dest = to.join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if root.join(&rel).is_file() {
            std::fs::copy(root.join(&rel), &dest)?;
        }
    }
    Ok(())
}

pub fn run(args: &PinsArgs) -> Result<()> {
    let root = crate::backend::repository();
    let manifest_path = root.join("xtask/Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)?;
    let test = resolved(&root, &["--workspace", "-e", "normal,build,dev"])?;
    let copy = tempfile::tempdir()?;
    copy_workspace(&root, copy.path())?;
    let bare = with_block(&manifest, &format!("{BEGIN}\n{END}"))?;
    std::fs::write(copy.path().join("xtask/Cargo.toml"), bare)?;
    let unpinned = resolved(copy.path(), &["-p", "xtask", "-e", "normal,build"])?;
    let wanted = pins(&test, &unpinned);
    let updated = with_block(&manifest, &wanted)?;
    if args.write {
        rnnlm_data::atomic_write(&manifest_path, updated.as_bytes())?;
        println!(
            "wrote the feature pins into {}:\n{wanted}",
            manifest_path.display()
        );
        return Ok(());
    }
    if updated != manifest {
        bail!(
            "the feature pins in {} are stale; `cargo xtask feature-pins --write` sets them to:\n{wanted}",
            manifest_path.display()
        );
    }
    // With the pins, both builds resolve every shared crate alike: one build of Burn.
    let pinned = resolved(&root, &["-p", "xtask", "-e", "normal,build"])?;
    let differ: Vec<&String> = test
        .iter()
        .filter(|(name, (_, f))| pinned.get(*name).is_some_and(|(_, g)| f != g))
        .map(|(name, _)| name)
        .collect();
    if !differ.is_empty() {
        bail!("`cargo test` and `cargo xtask` still resolve {differ:?} differently");
    }
    println!(
        "feature pins up to date: `cargo test --workspace` and `cargo xtask` resolve the same features"
    );
    Ok(())
}
