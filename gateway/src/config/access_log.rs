//! `access_log:` — where request lines go and how many may wait for the writer (the writer
//! itself is `access_log`).
use super::defaults;
use berth_plugins::params::Obj;
use std::path::{Path, PathBuf};

/// Largest `access_log.queue`.
pub const MAX_QUEUE: usize = 1_000_000;

/// `access_log:` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConf {
    pub target: Target,
    /// Log `path?query` instead of `path`.
    pub include_query: bool,
    /// Lines queued for the writer; beyond it lines are dropped (counted).
    pub queue: usize,
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// Appended to; an absolute path (made so at load time, so a reopen after a daemon's
    /// `chdir` opens the same file).
    File(PathBuf),
}

/// Read `access_log:` (absent, or `enabled: false` → `None`).
pub(super) fn read(top: &mut Obj<'_, '_>) -> Option<AccessLogConf> {
    let v = top.raw("access_log")?;
    let path = top.path_of("access_log");
    let mut o = Obj::new(v, path, top.errors())?;
    let enabled = o.flag("enabled", true);
    let target = match o.opt::<String>("path") {
        None => Some(Target::Stdout),
        Some(p) if p == "stdout" => Some(Target::Stdout),
        Some(p) => file_target(&mut o, &p),
    };
    let include_query = o.flag("include_query", false);
    let queue = o
        .opt::<usize>("queue")
        .unwrap_or(defaults::ACCESS_LOG_QUEUE);
    if !(1..=MAX_QUEUE).contains(&queue) {
        o.error("queue", format!("{queue} is out of range 1..={MAX_QUEUE}"));
    }
    o.finish();
    Some(AccessLogConf {
        target: target?,
        include_query,
        queue,
    })
    .filter(|_| enabled)
}

fn file_target(o: &mut Obj<'_, '_>, p: &str) -> Option<Target> {
    let file = match std::path::absolute(p) {
        Ok(f) if !p.is_empty() => f,
        _ => {
            o.error("path", format!("{p:?} is not a file path (or \"stdout\")"));
            return None;
        }
    };
    if file.is_dir() {
        o.error("path", format!("{p:?} is a directory"));
        return None;
    }
    let dir = file.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        let msg = format!("directory {} does not exist", dir.display());
        o.error("path", msg);
        return None;
    }
    Some(Target::File(file))
}
