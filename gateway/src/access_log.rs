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
use crate::config::{AccessLogConf, Target};
use crate::metrics::Metrics;
use crate::policy::Attempt;
use crate::upstream::{BackendSet, Upstream};
use berth_routing::Reason;
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

/// How often the writer looks for queued lines when it found none. Polling (instead of
/// blocking on the channel) means a request never has to wake the writer: no system call on
/// the request path.
pub const POLL: Duration = Duration::from_millis(20);
/// A batch is written once it reaches this size, even if more lines are queued.
const BATCH_BYTES: usize = 64 * 1024;

/// What the proxy knows when a request ends: names, not the upstream's live state, so a
/// queued line holds nothing of the gateway.
pub struct Record {
    pub upstream: Option<Arc<str>>,
    /// The backend's id.
    pub backend: Option<Arc<str>>,
    pub reason: Option<Reason>,
    /// Placed without the shared registry (reason `degraded` in the log).
    pub degraded: bool,
    pub status: Option<u16>,
    pub elapsed: Option<Duration>,
}

impl Record {
    /// What the proxy knows of a request routed (or not) by `upstream` on `set`.
    pub fn new(upstream: Option<&Upstream>, set: Option<&BackendSet>, a: &Attempt) -> Record {
        let d = a.decision;
        Record {
            upstream: upstream.map(|u| u.name.clone()),
            backend: set
                .zip(d)
                .and_then(|(s, d)| s.backends.get(d.backend))
                .map(|b| b.name.clone()),
            reason: d.map(|d| d.reason),
            degraded: a.degraded,
            status: None,
            elapsed: None,
        }
    }

    /// With how it ended.
    pub fn finished(self, status: Option<u16>, elapsed: Option<Duration>) -> Record {
        Record {
            status,
            elapsed,
            ..self
        }
    }
}

/// One queued line.
struct Entry {
    time: SystemTime,
    client: Option<IpAddr>,
    method: http::Method,
    path: String,
    done: Record,
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
    pub fn record(&self, session: &Session, done: Record) {
        let req = session.req_header();
        let path = match req.uri.path_and_query() {
            Some(pq) if self.include_query => pq.as_str(),
            _ => req.uri.path(),
        };
        self.push(Entry {
            time: SystemTime::now(),
            client: crate::views::client_ip(session),
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
        let line = Line {
            time: &time,
            client: self.client,
            method: self.method.as_str(),
            path: &self.path,
            upstream: d.upstream.as_deref(),
            backend: d.backend.as_deref(),
            reason: if d.degraded {
                Some("degraded")
            } else {
                d.reason.map(Reason::as_str)
            },
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
    pub log: Arc<AccessLog>,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for WriterService {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        if let Err(e) = self.log.start_writer() {
            log::error!("access log: cannot start the writer thread, nothing is logged: {e}");
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
            done: Record {
                upstream: None,
                backend: None,
                reason: None,
                degraded: false,
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
