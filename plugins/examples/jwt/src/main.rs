//! `berth-jwt`: the `berth` binary with the `jwt` plugin registered — what a plugin author
//! ships. Same command line as `berth` (`-c`, `-t`, `-u`, `-d`).
use berth_jwt::keys::FileCache;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // State the factory captures: key files read once, shared by every upstream's plugin,
    // and read again on a reload only when they changed.
    let cache = Arc::new(FileCache::default());
    let code = berth::Berth::builder()
        .plugin("jwt", berth_jwt::factory(cache))
        .run();
    std::process::exit(code);
}
