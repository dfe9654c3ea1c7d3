//! Wraps the guest's core Wasm module into a component and hands it to the
//! host crate for embedding, so `touchline` runs with no guest file around.
//!
//! `make guest` builds the core module for `wasm32-unknown-unknown`
//! (wit-bindgen embeds the `match-worker` world in a custom section); here
//! `wit-component` turns it into a component whose only imports are the
//! ones `wit/` declares. Override the input with `TOUCHLINE_GUEST_WASM`.
//!
//! The fault-injection guest (`make guest` builds it into `target/faulty/`)
//! is wrapped too, into `OUT_DIR/touchline_guest_faulty.wasm` and a copy at
//! `target/touchline_guest_faulty.wasm`; tests find it through the
//! `TOUCHLINE_FAULTY_GUEST` compile-time variable. It is never embedded.

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
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let out = out_dir.join("touchline_guest.component.wasm");
    componentize(&input, &out);

    let faulty = target.join("faulty/wasm32-unknown-unknown/release/touchline_guest.wasm");
    println!("cargo:rerun-if-changed={}", faulty.display());
    let faulty_out = out_dir.join("touchline_guest_faulty.wasm");
    componentize(&faulty, &faulty_out);
    // A stable place for people running `touchline serve --guest` by hand.
    let _ = std::fs::copy(&faulty_out, target.join("touchline_guest_faulty.wasm"));
    println!("cargo:rustc-env=TOUCHLINE_FAULTY_GUEST={}", faulty_out.display());
}

fn componentize(input: &std::path::Path, out: &std::path::Path) {
    let module = std::fs::read(input).unwrap_or_else(|e| {
        panic!(
            "reading the guest module {}: {e}\nbuild the guests first: `make guest`",
            input.display()
        )
    });
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|e| e.validate(true).encode())
        .unwrap_or_else(|e| panic!("wrapping {} into a component: {e:#}", input.display()));
    std::fs::write(out, component).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
