//! `make fuzz`: bounded-time fuzzing of the feed framer and parser on
//! stable Rust (no cargo-fuzz, no nightly).
//!
//! The seed corpus is the real samples (`tests/data/*/messages`). Each
//! execution mutates a corpus entry ([`mutate`]), appends one valid sample
//! and checks the result ([`check`]), read whole and in random pieces,
//! under a message size bound drawn between the valid message's size and
//! [`check::LIMIT`] (so junk is often oversized). It runs for
//! `FUZZ_SECONDS` (default 600) on one core from `FUZZ_SEED` (default: the
//! clock; printed, so a run can be repeated), then prints the executions,
//! the findings and the drop reasons the inputs exercised. A finding (a panic or a broken property) is
//! saved under `FUZZ_OUT` (default `target/fuzz-findings`) as the stream
//! (`.bin`) and what went wrong (`.txt`), and the exit code is 1.

mod check;
mod mutate;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use check::{Valid, check};

/// Findings saved at most (the count goes on).
const MAX_SAVED: usize = 20;

fn main() -> std::process::ExitCode {
    let seconds = env_u64("FUZZ_SECONDS").unwrap_or(600);
    let seed = env_u64("FUZZ_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let out = std::env::var_os("FUZZ_OUT").map_or_else(|| PathBuf::from("target/fuzz-findings"), PathBuf::from);
    let samples = samples();
    let corpus: Vec<Vec<u8>> = samples.iter().map(|v| v.file.clone()).collect();
    println!(
        "fuzzing framer + parser for {seconds} s, seed {seed}, {} seed inputs",
        corpus.len()
    );
    // Panics are findings: keep their messages off the terminal, report them.
    std::panic::set_hook(Box::new(|_| {}));

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let (mut executions, mut findings) = (0u64, 0usize);
    let mut drops = std::collections::BTreeMap::<&str, u64>::new();
    while Instant::now() < deadline {
        let input = mutate::mutate(&corpus, &mut rng);
        let valid = &samples[rng.random_range(0..samples.len())];
        let len = input.len() + valid.file.len();
        let mut cuts: Vec<usize> = (0..rng.random_range(0..8)).map(|_| rng.random_range(0..=len)).collect();
        cuts.sort_unstable();
        let limit = rng.random_range(valid.element.len()..=check::LIMIT);
        let outcome = std::panic::catch_unwind(|| check(&input, valid, &cuts, limit))
            .unwrap_or_else(|panic| Err(format!("panic: {}", panic_message(&*panic))));
        executions += 1;
        match outcome {
            Ok(reasons) => reasons.into_iter().for_each(|r| *drops.entry(r).or_default() += 1),
            Err(what) => {
                findings += 1;
                eprintln!("finding {findings}: {what}");
                if findings <= MAX_SAVED {
                    save(&out, seed, findings, (&input, valid, &cuts, limit), &what);
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{executions} executions in {secs:.0} s ({:.0}/s), {findings} findings, seed {seed}",
        executions as f64 / secs
    );
    println!("drops exercised, by reason: {drops:?}");
    match findings {
        0 => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::FAILURE,
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            eprintln!("{name}={value:?} is not a number; using the default");
            None
        }
    }
}

/// Every sample message file, the seed corpus and the valid messages.
fn samples() -> Vec<Valid> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let mut out = Vec::new();
    for set in ["uof", "uof-minus5"] {
        let dir = data.join(set).join("messages");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(|e| Some(e.ok()?.path()))
            .collect();
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            let name = p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            out.push(Valid::new(format!("{set}/messages/{name}"), bytes));
        }
    }
    out
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Save a finding: the stream as read, and how to replay it.
fn save(out: &Path, seed: u64, n: usize, case: (&[u8], &Valid, &[usize], usize), what: &str) {
    let (input, valid, cuts, limit) = case;
    let base = out.join(format!("finding-{seed}-{n}"));
    let mut stream = input.to_vec();
    stream.extend_from_slice(&valid.file);
    let note = format!(
        "{what}\n\nstream: {} bytes = {} mutated + {} ({})\nreads cut at: {cuts:?}\nmax message: {limit}\n",
        stream.len(),
        input.len(),
        valid.file.len(),
        valid.name
    );
    let written = std::fs::create_dir_all(out)
        .and_then(|()| std::fs::write(base.with_extension("bin"), &stream))
        .and_then(|()| std::fs::write(base.with_extension("txt"), note));
    match written {
        Ok(()) => eprintln!("  saved {}.bin and .txt", base.display()),
        Err(e) => eprintln!("  could not save {}: {e}", base.display()),
    }
}
