//! Live reload: SIGHUP or a change of the config file (debounced).
//!
//! The new file is parsed and validated in full first; an invalid file, or
//! one that changes settings that need a restart (brokers, group id, topics,
//! store, listeners), is refused as a whole with a log line and
//! `wadispatch_config_reloads_total{result="invalid"|"rejected"}`, and the
//! running config stays. Otherwise pacing, pauses, sender limits and the
//! portfolio limit apply at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::metrics;

#[derive(Debug)]
pub enum Reload {
    Apply(Box<Config>),
    Unchanged,
    Invalid(String),
    Rejected(Vec<String>),
}

/// Decides what a reload of `path` does against the running `current`.
pub fn evaluate(current: &Config, path: &Path) -> Reload {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return Reload::Invalid(e.to_string()),
    };
    let restart = current.restart_required_changes(&new);
    if !restart.is_empty() {
        return Reload::Rejected(restart);
    }
    if current.live_changes(&new).is_empty() {
        return Reload::Unchanged;
    }
    Reload::Apply(Box::new(new))
}

/// Logs and counts a reload decision; returns the config to apply, if any.
pub fn report(decision: Reload, path: &Path) -> Option<Config> {
    match decision {
        Reload::Apply(c) => {
            metrics::config_reload("applied");
            tracing::info!(file = %path.display(), "config reload applied");
            Some(*c)
        }
        Reload::Unchanged => {
            metrics::config_reload("unchanged");
            tracing::info!(file = %path.display(), "config reload: nothing to change");
            None
        }
        Reload::Invalid(e) => {
            metrics::config_reload("invalid");
            tracing::error!(file = %path.display(), error = %e, "config reload refused: the file is invalid; the running config stays");
            None
        }
        Reload::Rejected(keys) => {
            metrics::config_reload("rejected");
            tracing::error!(file = %path.display(), keys = ?keys, "config reload refused: these settings need a restart; the running config stays (restart to apply them)");
            None
        }
    }
}

/// Watches the file's modification time; a change stable for `debounce`
/// triggers a reload (editors write in several steps).
pub struct FileWatch {
    path: PathBuf,
    seen: Option<SystemTime>,
    changed_at: Option<(SystemTime, std::time::Instant)>,
    debounce: Duration,
}

impl FileWatch {
    pub fn new(path: &Path, debounce: Duration) -> Self {
        FileWatch {
            path: path.to_path_buf(),
            seen: std::fs::metadata(path).and_then(|m| m.modified()).ok(),
            changed_at: None,
            debounce,
        }
    }

    /// Called periodically; true when a settled change is due for reload.
    pub fn poll(&mut self) -> bool {
        let Ok(mtime) = std::fs::metadata(&self.path).and_then(|m| m.modified()) else {
            return false;
        };
        if Some(mtime) == self.seen {
            self.changed_at = None;
            return false;
        }
        match self.changed_at {
            Some((t, since)) if t == mtime && since.elapsed() >= self.debounce => {
                self.seen = Some(mtime);
                self.changed_at = None;
                true
            }
            Some((t, _)) if t == mtime => false,
            _ => {
                self.changed_at = Some((mtime, std::time::Instant::now()));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn reload_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        write(&path, "[senders.\"1001\"]\nper_second = 20\n");
        let running = Config::load(&path).unwrap();
        assert!(matches!(evaluate(&running, &path), Reload::Unchanged));
        write(&path, "[senders.\"1001\"]\nper_second = 50\n");
        match evaluate(&running, &path) {
            Reload::Apply(c) => assert_eq!(c.senders["1001"].per_second, 50.0),
            other => panic!("expected apply, got {other:?}"),
        }
        write(
            &path,
            "[senders.\"1001\"]\nper_second = 50\n[kafka]\nbrokers = \"elsewhere:9092\"\n",
        );
        match evaluate(&running, &path) {
            Reload::Rejected(keys) => assert_eq!(keys, vec!["kafka.brokers".to_string()]),
            other => panic!("expected rejected, got {other:?}"),
        }
        write(&path, "[senders.\"1001\"]\nper_second = -1\n");
        assert!(matches!(evaluate(&running, &path), Reload::Invalid(_)));
        assert!(report(Reload::Unchanged, &path).is_none());
    }

    #[test]
    fn file_watch_waits_for_the_change_to_settle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        write(&path, "a");
        let mut watch = FileWatch::new(&path, Duration::from_millis(0));
        assert!(!watch.poll(), "nothing changed");
        // Make the modification time differ even on coarse filesystems.
        let later = SystemTime::now() + Duration::from_secs(5);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_modified(later).unwrap();
        assert!(
            !watch.poll(),
            "first sight of a change only starts the debounce"
        );
        assert!(watch.poll(), "a settled change triggers a reload");
        assert!(!watch.poll(), "once");
    }
}
