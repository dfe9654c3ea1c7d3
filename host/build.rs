//! Wraps the guests' core Wasm modules into components and hands them to the
//! host crate, so `touchline` runs with no guest file around.
//!
//! `make guest` builds the core modules for `wasm32-unknown-unknown`
//! (wit-bindgen embeds the `match-worker` world in a custom section); here
//! `wit-component` turns each into a component whose only imports are the
//! ones `wit/` declares. Override the default input with
//! `TOUCHLINE_GUEST_WASM`.
//!
//! Only the default guest is embedded. The others are written to `OUT_DIR`
//! (and copied to `target/` for people running `touchline serve --guest` or
//! `touchline swap` by hand); tests and the benchmark find them through
//! compile-time variables:
//! - `TOUCHLINE_FAULTY_GUEST`: the fault-injection guest (`target/faulty/`);
//! - `TOUCHLINE_V2_GUEST`: match logic v2 (`target/v2/`, feature `v2`);
//! - `TOUCHLINE_FOREIGN_GUESTS`: a directory of components that must be
//!   refused by a hot swap, made here from WIT alone (their functions are
//!   `unreachable`): `other-world.wasm` (exports something else entirely),
//!   `no-migrate.wasm` (the `match` interface without `migrate`) and
//!   `extra-import.wasm` (the right exports, plus an import the host does
//!   not provide).

use std::path::{Path, PathBuf};

use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| manifest.join("../target"), PathBuf::from);
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let input = std::env::var_os("TOUCHLINE_GUEST_WASM").map_or_else(
        || target.join("wasm32-unknown-unknown/release/touchline_guest.wasm"),
        PathBuf::from,
    );
    println!("cargo:rerun-if-env-changed=TOUCHLINE_GUEST_WASM");
    wrap(&input, &out_dir.join("touchline_guest.component.wasm"));

    for (name, var) in [("faulty", "TOUCHLINE_FAULTY_GUEST"), ("v2", "TOUCHLINE_V2_GUEST")] {
        let module = target
            .join(name)
            .join("wasm32-unknown-unknown/release/touchline_guest.wasm");
        let out = out_dir.join(format!("touchline_guest_{name}.wasm"));
        wrap(&module, &out);
        let _ = std::fs::copy(&out, target.join(format!("touchline_guest_{name}.wasm")));
        println!("cargo:rustc-env={var}={}", out.display());
    }

    let wit = manifest.join("../wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let foreign = out_dir.join("foreign");
    std::fs::create_dir_all(&foreign).expect("creating OUT_DIR/foreign");
    foreign_guests(&wit, &foreign);
    println!("cargo:rustc-env=TOUCHLINE_FOREIGN_GUESTS={}", foreign.display());
}

fn wrap(input: &Path, out: &Path) {
    println!("cargo:rerun-if-changed={}", input.display());
    let module = std::fs::read(input).unwrap_or_else(|e| {
        panic!(
            "reading the guest module {}: {e}\nbuild the guests first: `make guest`",
            input.display()
        )
    });
    let component = ComponentEncoder::default()
        .module(&module)
        .and_then(|e| e.validate(true).encode())
        .unwrap_or_else(|e| panic!("wrapping {} into a component: {e:#}", input.display()));
    std::fs::write(out, component).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

const OTHER_WORLD: &str = "package acme:weather;
world forecaster {
    export forecast: func(city: string) -> string;
}";

const EXTRA_IMPORT: &str = "package acme:spy;
interface net {
    send: func(bytes: list<u8>);
}
world spy {
    include touchline:worker/match-worker@0.3.0;
    import net;
}";

/// Components built from WIT alone, each wrong in one way.
fn foreign_guests(wit: &Path, out: &Path) {
    // The real package, same name and version, minus `migrate`: what a
    // guest built against the previous interface looks like.
    let real = std::fs::read_to_string(wit.join("match-worker.wit")).expect("reading wit/match-worker.wit");
    let without = real
        .lines()
        .filter(|l| !l.trim_start().starts_with("migrate: func"))
        .collect::<Vec<_>>()
        .join("\n");
    for (name, text, world) in [
        ("other-world", OTHER_WORLD, "forecaster"),
        ("no-migrate", without.as_str(), "match-worker"),
        ("extra-import", EXTRA_IMPORT, "spy"),
    ] {
        let mut resolve = Resolve::default();
        if name == "extra-import" {
            resolve.push_dir(wit).expect("parsing wit/");
        }
        let pkg = resolve
            .push_str(format!("{name}.wit"), text)
            .unwrap_or_else(|e| panic!("parsing {name}: {e:#}"));
        let world = resolve
            .select_world(&[pkg], Some(world))
            .unwrap_or_else(|e| panic!("selecting {name}: {e:#}"));
        let mut module = wit_component::dummy_module(&resolve, world, ManglingAndAbi::Legacy(LiftLowerAbi::Sync));
        wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
            .unwrap_or_else(|e| panic!("embedding {name}: {e:#}"));
        let component = ComponentEncoder::default()
            .module(&module)
            .and_then(|e| e.validate(true).encode())
            .unwrap_or_else(|e| panic!("encoding {name}: {e:#}"));
        std::fs::write(out.join(format!("{name}.wasm")), component).expect("writing a foreign component");
    }
}
