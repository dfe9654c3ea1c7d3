//! Wraps the guest's core Wasm module into a component and hands it to the
//! host crate for embedding, so `touchline` runs with no guest file around.
//!
//! `make guest` builds the core module for `wasm32-unknown-unknown`
//! (wit-bindgen embeds the `match-worker` world in a custom section); here
//! `wit-component` turns it into a component whose only imports are the
//! ones `wit/` declares. Override the input with `TOUCHLINE_GUEST_WASM`.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| manifest.join("../target"), PathBuf::from);
    let input = std::env::var_os("TOUCHLINE_GUEST_WASM").map_or_else(
        || target.join("wasm32-unknown-unknown/release/touchline_guest.wasm"),
        PathBuf::from,
    );
    println!("cargo:rerun-if-env-changed=TOUCHLINE_GUEST_WASM");
    println!("cargo:rerun-if-changed={}", input.display());
    let module = std::fs::read(&input).unwrap_or_else(|e| {
        panic!(
            "reading the guest module {}: {e}\nbuild it first: `make guest` (cargo build -p touchline-guest --release --target wasm32-unknown-unknown)",
            input.display()
        )
    });
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|e| e.validate(true).encode())
        .unwrap_or_else(|e| panic!("wrapping {} into a component: {e:#}", input.display()));
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("touchline_guest.component.wasm");
    std::fs::write(&out, component).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
