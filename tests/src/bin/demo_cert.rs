//! `berth-demo-cert <dir>` — the self-signed certificate `make run` serves HTTPS with on
//! 127.0.0.1:8443: writes `<dir>/berth-demo.pem` and `<dir>/berth-demo.key` (names `localhost`,
//! `berth.localhost`, `127.0.0.1`; valid 30 days) unless a certificate there is still valid for
//! a day. Generated on the machine, never committed (`target/` is ignored by git).
use std::path::Path;
use std::time::{Duration, SystemTime};

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: berth-demo-cert <dir>");
        std::process::exit(2)
    });
    let dir = Path::new(&dir);
    let cert = dir.join("berth-demo.pem");
    let key = dir.join("berth-demo.key");
    if fresh(&cert) && key.is_file() {
        return;
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("create {dir:?}: {e}")));
    let names = ["localhost", "berth.localhost", "127.0.0.1"];
    let mut params = rcgen::CertificateParams::new(names.map(String::from).to_vec())
        .unwrap_or_else(|e| fail(&format!("certificate names: {e}")));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "berth demo (self-signed)");
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(30 * 86400)).into();
    let pair = rcgen::KeyPair::generate().unwrap_or_else(|e| fail(&format!("key: {e}")));
    let signed = params
        .self_signed(&pair)
        .unwrap_or_else(|e| fail(&format!("self-sign: {e}")));
    write(&key, &pair.serialize_pem());
    write(&cert, &signed.pem());
    println!(
        "berth-demo-cert: wrote {} (self-signed, 30 days)",
        cert.display()
    );
}

/// The certificate at `path` was written less than 29 days ago (it is valid for 30).
fn fresh(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(29 * 86400))
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .unwrap_or_else(|e| fail(&format!("write {path:?}: {e}")));
}

fn fail(msg: &str) -> ! {
    eprintln!("berth-demo-cert: {msg}");
    std::process::exit(1)
}
