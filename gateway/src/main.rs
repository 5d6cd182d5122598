//! The `berth` binary: see `berth --help` and conf/berth.yaml.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(berth::main());
}
