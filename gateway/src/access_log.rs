//! The optional access log (`access_log:` in the config): one JSON object per line and per
//! request, written by a thread of its own.
//!
//! ```text
//! {"time":"2025-01-31T12:00:00.123Z","client":"10.0.0.7","method":"GET","path":"/cart",
//!  "upstream":"app","backend":"b2","reason":"sticky","status":200,"duration_ms":1.234,"bytes":512}
//! ```
//! (one line in the file). `time` is when the response finished (UTC); `client` the TCP peer's
//! address (not `X-Forwarded-For`); `path` excludes the query string unless `include_query`
//! (query strings often carry tokens and personal data); `backend` is the backend's id, never
//! its address; `upstream`, `backend`, `reason` and `status` are `null` when there was none
//! (no route, no backend available, no response sent); `duration_ms` is the time from the
//! request header to the last byte of the response, like `berth_request_duration_seconds`;
//! `bytes` counts response body bytes sent.
//!
//! The request path never writes: it queues an entry on a bounded channel (one allocation,
//! for the path) and returns. When the queue is full the line is dropped and counted in
//! `berth_access_log_dropped_total{why="queue_full"}`; lines whose write fails are counted
//! with `why="write_error"`. The writer drains the queue every [`POLL`] and writes each batch
//! with one `write` call. `SIGHUP` reopens the file (for log rotation).
use crate::metrics::Metrics;
use crate::upstreams::{Table, Upstream};
use berth_plugins::params::Obj;
use berth_routing::{Decision, Reason};
use parking_lot::Mutex;
use pingora_proxy::Session;
use prometheus::IntCounter;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Default of `access_log.queue` (lines).
pub const DEFAULT_QUEUE: usize = 8192;
/// Largest `access_log.queue`.
pub const MAX_QUEUE: usize = 1_000_000;
/// How often the writer looks for queued lines when it found none. Polling (instead of
/// blocking on the channel) means a request never has to wake the writer: no system call on
/// the request path.
pub const POLL: Duration = Duration::from_millis(20);
/// A batch is written once it reaches this size, even if more lines are queued.
const BATCH_BYTES: usize = 64 * 1024;

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
pub fn read_conf(top: &mut Obj<'_, '_>) -> Option<AccessLogConf> {
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
    let queue = o.opt::<usize>("queue").unwrap_or(DEFAULT_QUEUE);
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

/// What the proxy knows when a request ends (moved out of its context: no reference-count
/// traffic).
pub struct Done {
    pub upstream: Option<Arc<Upstream>>,
    pub table: Option<Arc<Table>>,
    pub decision: Option<Decision>,
    pub status: Option<u16>,
    pub elapsed: Option<Duration>,
}

/// One queued line.
struct Entry {
    time: SystemTime,
    client: Option<IpAddr>,
    method: http::Method,
    path: String,
    done: Done,
    bytes: usize,
}

/// The access log: the request side of the queue, and the writer's parts until it starts.
pub struct AccessLog {
    tx: SyncSender<Entry>,
    include_query: bool,
    dropped_full: IntCounter,
    reopen: Arc<AtomicBool>,
    writer: Mutex<Option<Writer>>,
}

impl AccessLog {
    /// Open the target (at start, so an unusable path stops Berth before it serves). The
    /// writer thread is started later by [`AccessLog::start_writer`].
    pub fn open(conf: &AccessLogConf, metrics: &Metrics) -> io::Result<AccessLog> {
        let out = Output::open(&conf.target)?;
        let (tx, rx) = sync_channel(conf.queue);
        let reopen = Arc::new(AtomicBool::new(false));
        Ok(AccessLog {
            tx,
            include_query: conf.include_query,
            dropped_full: metrics.access_log_full.clone(),
            reopen: reopen.clone(),
            writer: Mutex::new(Some(Writer {
                rx,
                out,
                reopen,
                dropped_write: metrics.access_log_write_error.clone(),
            })),
        })
    }

    /// Start the writer thread (once; later calls do nothing). Called from a background
    /// service, i.e. after Pingora has daemonized.
    pub fn start_writer(&self) -> io::Result<()> {
        let Some(w) = self.writer.lock().take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("berth-access-log".into())
            .spawn(move || w.run())
            .map(drop)
    }

    /// Reopen the file at its path before the next write (after log rotation).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Queue the line of a finished request; drop it (counted) when the queue is full.
    pub fn record(&self, session: &Session, done: Done) {
        let req = session.req_header();
        let path = match req.uri.path_and_query() {
            Some(pq) if self.include_query => pq.as_str(),
            _ => req.uri.path(),
        };
        self.push(Entry {
            time: SystemTime::now(),
            client: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            method: req.method.clone(),
            path: path.to_string(),
            done,
            bytes: session.body_bytes_sent(),
        });
    }

    fn push(&self, e: Entry) {
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped_full.inc(),
        }
    }
}

/// The writer side.
struct Writer {
    rx: Receiver<Entry>,
    out: Output,
    reopen: Arc<AtomicBool>,
    dropped_write: IntCounter,
}

impl Writer {
    fn run(mut self) {
        let mut buf = Vec::with_capacity(BATCH_BYTES + 4096);
        let mut failing = false;
        loop {
            let mut lines = 0u64;
            let mut closed = false;
            while buf.len() < BATCH_BYTES {
                match self.rx.try_recv() {
                    Ok(e) => {
                        e.write_json(&mut buf);
                        lines += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if self.reopen.swap(false, Ordering::Relaxed) {
                self.out.reopen();
            }
            if lines > 0 {
                match self.out.write(&buf) {
                    Ok(()) if failing => {
                        log::info!("access log: writing again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if !failing {
                            log::error!("access log: write failed, lines are dropped: {e}");
                            failing = true;
                        }
                        self.dropped_write.inc_by(lines);
                    }
                }
                buf.clear();
            }
            if closed {
                return;
            }
            if lines == 0 {
                std::thread::sleep(POLL);
            }
        }
    }
}

/// JSON line fields (borrowed from an [`Entry`]).
#[derive(serde::Serialize)]
struct Line<'a> {
    time: &'a str,
    client: Option<IpAddr>,
    method: &'a str,
    path: &'a str,
    upstream: Option<&'a str>,
    backend: Option<&'a str>,
    reason: Option<&'static str>,
    status: Option<u16>,
    duration_ms: Option<f64>,
    bytes: usize,
}

impl Entry {
    fn write_json(&self, out: &mut Vec<u8>) {
        let time = humantime::format_rfc3339_millis(self.time).to_string();
        let d = &self.done;
        let backend = match (&d.table, d.decision) {
            (Some(t), Some(dec)) if dec.backend < t.router.len() => {
                Some(t.router.name(dec.backend))
            }
            _ => None,
        };
        let line = Line {
            time: &time,
            client: self.client,
            method: self.method.as_str(),
            path: &self.path,
            upstream: d.upstream.as_ref().map(|u| u.name.as_str()),
            backend,
            reason: d.decision.map(|dec| Reason::as_str(dec.reason)),
            status: d.status,
            duration_ms: d.elapsed.map(|e| e.as_micros() as f64 / 1000.0),
            bytes: self.bytes,
        };
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
        }
    }
}

/// An open target.
enum Output {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Output {
    fn open(target: &Target) -> io::Result<Output> {
        Ok(match target {
            Target::Stdout => Output::Stdout,
            Target::File(path) => Output::File {
                file: append(path)?,
                path: path.clone(),
            },
        })
    }

    fn reopen(&mut self) {
        if let Output::File { path, file } = self {
            match append(path) {
                Ok(f) => *file = f,
                Err(e) => log::error!(
                    "access log: cannot reopen {}, still writing to the old file: {e}",
                    path.display()
                ),
            }
        }
    }

    /// One `write` call per batch where the OS allows (append mode: lines of concurrent
    /// writers, e.g. the old and new process during an upgrade, do not interleave).
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            Output::File { file, .. } => file.write_all(buf),
        }
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Starts the writer thread once Pingora runs its services (after daemonizing: a thread
/// started before the fork would not exist in the daemon).
pub struct WriterService {
    pub gw: Arc<crate::upstreams::Gateway>,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for WriterService {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        if let Some(log) = &self.gw.access_log {
            if let Err(e) = log.start_writer() {
                log::error!("access log: cannot start the writer thread, nothing is logged: {e}");
            }
        }
        // The thread writes until the process exits; this service just lives as long.
        let _ = shutdown.changed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            client: Some("127.0.0.9".parse().expect("an address")),
            method: http::Method::GET,
            path: path.into(),
            done: Done {
                upstream: None,
                table: None,
                decision: None,
                status: Some(404),
                elapsed: Some(Duration::from_micros(1234)),
            },
            bytes: 27,
        }
    }

    #[test]
    fn a_line_is_one_json_object() {
        let mut out = Vec::new();
        entry("/a\"b").write_json(&mut out);
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["client"], "127.0.0.9");
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["upstream"], serde_json::Value::Null);
        assert_eq!(v["backend"], serde_json::Value::Null);
        assert_eq!(v["status"], 404);
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v["bytes"], 27);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let metrics = Metrics::new();
        let dir = std::env::temp_dir().join(format!("berth-al-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = AccessLogConf {
            target: Target::File(dir.join("a.log")),
            include_query: false,
            queue: 3,
        };
        // The writer is not started: nothing drains the queue.
        let log = AccessLog::open(&conf, &metrics).expect("open");
        for i in 0..5 {
            log.push(entry(&format!("/{i}")));
        }
        assert_eq!(metrics.access_log_full.get(), 2);
        log.start_writer().expect("writer starts");
        let file = dir.join("a.log");
        let lines = (0..200)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(10));
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                (text.lines().count() == 3).then_some(text)
            })
            .expect("the 3 queued lines are written");
        assert!(lines.contains("\"path\":\"/0\"") && lines.contains("\"path\":\"/2\""));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
