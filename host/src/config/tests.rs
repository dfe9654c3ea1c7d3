//! Settings tests: defaults, precedence (flag > environment > file >
//! default), file errors, and every validation bound, through one `check`.

use clap::{CommandFactory as _, FromArgMatches as _, Parser};

use super::*;

/// `serve` and `demo` shaped as `main` declares them: both flatten
/// [`ServeArgs`]; `demo` adds simulator flags (one stands in for them).
#[derive(Parser, Debug)]
enum Cli {
    Serve(ServeArgs),
    Demo {
        #[command(flatten)]
        server: ServeArgs,
        #[arg(long, default_value_t = 12)]
        matches: u32,
    },
}

/// An environment variable for `--data` (which has none of its own):
/// tests cannot set variables (`set_var` is unsafe with threads), and
/// cargo sets this one for test runs. `--data` takes any value, so the
/// row does not depend on where the checkout lives (a token would have
/// to pass the 16-character minimum).
const ENV: &str = "CARGO_MANIFEST_DIR";

fn env_dir() -> String {
    std::env::var(ENV).expect("cargo test sets CARGO_MANIFEST_DIR")
}

/// `touchline <argv>` parsed as `main` parses it, with `file` (if not
/// empty) as the `--config` file's text, and `--data` read from [`ENV`]
/// when `env` (no other setting from any variable, whatever the
/// environment of the test).
fn settings(argv: &str, file: &str, env: bool) -> Result<Settings, String> {
    let command = Cli::command().mut_subcommands(|sub| {
        sub.mut_args(|arg| {
            let var = (env && arg.get_id() == "data").then_some(ENV);
            arg.env(var)
        })
    });
    let argv = std::iter::once("touchline").chain(argv.split_whitespace());
    let matches = command.try_get_matches_from(argv).map_err(|e| e.kind().to_string())?;
    let (_, sub) = matches.subcommand().expect("a subcommand");
    let (Cli::Serve(args) | Cli::Demo { server: args, .. }) =
        Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    if file.is_empty() {
        return Ok(args.settings);
    }
    args.settings.under_file(sub, file).map_err(|e| e.to_string())
}

/// What a row shows: the settings that differ from the defaults
/// (`key=value`, TOML-rendered, in key order) once they pass validation,
/// or `error: ` and what was refused.
fn outcome(argv: &str, file: &str, env: bool) -> String {
    let settings =
        settings(argv, file, env).and_then(|s| s.clone().into_config().map(|_| s).map_err(|e| e.to_string()));
    match settings {
        Ok(s) => {
            let defaults = toml::Table::try_from(Settings::default()).expect("defaults as TOML");
            let got = toml::Table::try_from(s).expect("settings as TOML");
            let mut diff: Vec<String> = got
                .iter()
                .filter(|(k, v)| defaults.get(k.as_str()) != Some(v))
                .map(|(k, v)| format!("{k}={}", render(v)))
                .collect();
            diff.sort();
            diff.join(" ")
        }
        Err(e) => format!("error: {e}"),
    }
}

/// A TOML value as a row writes it (toml's own `Display` is a feature
/// we do not build).
fn render(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => format!("{f:?}"),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => format!("[{}]", items.iter().map(render).collect::<Vec<_>>().join(",")),
        other => format!("{other:?}"),
    }
}

/// `expected` is the whole outcome, except that an expected
/// `error: ...` need only be contained in the error (TOML's messages
/// run over several lines).
fn check(argv: &str, file: &str, env: bool, expected: &str) {
    let got = outcome(argv, file, env);
    let ok = match expected.strip_prefix("error: ") {
        Some(e) => got.starts_with("error: ") && got.contains(e),
        None => got == expected,
    };
    assert!(
        ok,
        "touchline {argv}, file {file:?}, env {env}:\n  got      {got}\n  expected {expected}"
    );
}

#[test]
fn serve_and_demo_share_every_default() {
    let serve = settings("serve", "", false).expect("serve parses");
    let demo = settings("demo", "", false).expect("demo parses");
    let file = toml::from_str::<Settings>("").expect("an empty file parses");
    assert_eq!(serve, demo);
    assert_eq!(serve, Settings::default());
    assert_eq!(serve, file, "a file's missing keys are the flags' defaults");
    // The values `touchline serve --help` has always shown.
    assert_eq!(serve.http, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert_eq!(serve.data, PathBuf::from("./data"));
    assert_eq!(
        (serve.max_matches, serve.guest_memory_mib, serve.max_message_bytes),
        (10_000, 32, 4 << 20)
    );
    assert_eq!((serve.min_stake, serve.max_stake), (0.1, 10_000.0));
}

#[test]
fn flags_environment_file_and_defaults_in_that_order() {
    let dir = env_dir();
    let env_row = format!("data=\"{dir}\" feed-connect=\"f:1\"");
    #[rustfmt::skip]
    let rows: &[(&str, &str, bool, &str)] = &[
        // The file sets what nothing else does, for serve and demo alike.
        ("serve", "feed-connect = 'f:1'\nmax-matches = 5000", false, "feed-connect=\"f:1\" max-matches=5000"),
        ("demo", "feed-connect = 'f:1'\nmax-matches = 5000", false, "feed-connect=\"f:1\" max-matches=5000"),
        ("serve", "feed-connect = 'f:1'\nno-durability = true\nmin-stake = 1", false,
         "feed-connect=\"f:1\" min-stake=1.0 no-durability=true"),
        ("serve", "feed-connect = 'f:1'\ndata = '/srv/t'\nhttp = '0.0.0.0:80'", false,
         "data=\"/srv/t\" feed-connect=\"f:1\" http=\"0.0.0.0:80\""),
        // A flag beats the file, also when the flag gives the default.
        ("serve --max-matches 7", "feed-connect = 'f:1'\nmax-matches = 5000", false,
         "feed-connect=\"f:1\" max-matches=7"),
        ("serve --max-matches 10000", "feed-connect = 'f:1'\nmax-matches = 5000", false, "feed-connect=\"f:1\""),
        ("serve --feed-connect g:2", "feed-connect = 'f:1'", false, "feed-connect=\"g:2\""),
        ("demo --data d", "feed-connect = 'f:1'\ndata = 'e'", false, "data=\"d\" feed-connect=\"f:1\""),
        // A flag beats the environment.
        ("serve --feed-connect f:1 --data flag-dir", "", true,
         "data=\"flag-dir\" feed-connect=\"f:1\""),
    ];
    for &(argv, file, env, expected) in rows {
        check(argv, file, env, expected);
    }
    // The environment beats the file, and gives the token without one.
    check("serve --feed-connect f:1", "data = 'file-dir'", true, &env_row);
    check("serve --feed-connect f:1", "", true, &env_row);
    check(
        "serve --feed-connect f:1",
        "data = 'file-dir'",
        false,
        "data=\"file-dir\" feed-connect=\"f:1\"",
    );
}

#[test]
fn a_file_that_is_wrong_is_refused_by_name() {
    #[rustfmt::skip]
    let rows: &[(&str, &str)] = &[
        ("no-such-setting = 1", "error: unknown field `no-such-setting`"),
        ("max-matches = 1\nmax_matches = 2", "error: unknown field `max_matches`"),
        ("config = 'other.toml'", "error: unknown field `config`"),
        ("max-matches = 'many'", "error: invalid type: string \"many\", expected u32"),
        ("feed-connect = 'f:1'\nmax-matches = -1", "error: at line 2"),
        ("max-matches = ", "error: TOML parse error at line 1"),
    ];
    for &(file, expected) in rows {
        check("serve --feed-connect f:1", file, false, expected);
    }
}

#[test]
fn every_validation_error_and_the_bounds() {
    // The switch and canary bound follows the instance pool's slack: read
    // it from the error rather than name where the pool lives.
    let slack = match (Settings {
        feed_connect: Some("f:1".into()),
        rollout_concurrency: usize::MAX,
        ..Settings::default()
    })
    .into_config()
    {
        Err(ConfigError::OutOfRange { max, .. }) => max,
        other => panic!("an unbounded rollout concurrency passed: {other:?}"),
    };
    let defaults = toml::Table::try_from(Settings::default()).expect("defaults as TOML");
    let mut rows: Vec<(String, String)> = [
        ("serve", "error: give --feed-listen or --feed-connect"),
        ("demo", "error: give --feed-listen or --feed-connect"),
        ("serve --feed-listen 127.0.0.1:9", "feed-listen=\"127.0.0.1:9\""),
        (
            "serve --feed-listen 127.0.0.1:9 --feed-connect f:1",
            "feed-connect=\"f:1\" feed-listen=\"127.0.0.1:9\"",
        ),
        ("serve --feed-connect f:1 --min-stake 0", "error: stake limits"),
        ("serve --feed-connect f:1 --min-stake=-1", "error: stake limits"),
        ("serve --feed-connect f:1 --min-stake NaN", "error: stake limits"),
        ("serve --feed-connect f:1 --max-stake inf", "error: stake limits"),
        (
            "serve --feed-connect f:1 --min-stake 5 --max-stake 4.99",
            "error: stake limits",
        ),
        (
            "serve --feed-connect f:1 --min-stake 5 --max-stake 5",
            "feed-connect=\"f:1\" max-stake=5.0 min-stake=5.0",
        ),
        (
            "serve --feed-connect f:1 --admin-token 0123456789abcde",
            "error: the admin token must be at least 16 characters",
        ),
        (
            "serve --feed-connect f:1 --admin-token 0123456789abcdef",
            "admin-token=\"0123456789abcdef\" feed-connect=\"f:1\"",
        ),
        (
            "serve --feed-connect f:1 --max-feed-delay 0",
            "feed-connect=\"f:1\" max-feed-delay=0",
        ),
        (
            "serve --feed-connect f:1 --max-feed-delay 3600",
            "feed-connect=\"f:1\" max-feed-delay=3600",
        ),
        (
            "serve --feed-connect f:1 --max-feed-delay 3601",
            "error: --max-feed-delay must be between 1 and 3600, got 3601",
        ),
        (
            "serve --feed-connect f:1 --producers 1",
            "feed-connect=\"f:1\" producers=[1]",
        ),
        (
            "serve --feed-connect f:1 --producers 1,2",
            "error: --producers: no producer 2 in the producer table",
        ),
        (
            "serve --feed-connect f:1 --producers 3,3",
            "error: --producers: producer 3 is listed twice",
        ),
        (
            "serve --feed-connect f:1 --recovery-url http://127.0.0.1:9",
            "feed-connect=\"f:1\" recovery-url=\"http://127.0.0.1:9\"",
        ),
        (
            "serve --feed-connect f:1 --recovery-url https://api.betradar.com",
            "error: --recovery-url: provider API URL \"https://api.betradar.com\" is not http://host:port[/path]",
        ),
    ]
    .iter()
    .map(|&(a, e)| (a.to_owned(), e.to_owned()))
    .collect();
    // (flag, min, max): min - 1 and max + 1 are refused, min and max accepted.
    let bounds: &[(&str, u64, u64)] = &[
        ("max-matches", 1, 1_000_000),
        ("guest-memory-mib", 2, 4096),
        ("guest-deadline-ms", 1, 60_000),
        ("max-message-bytes", 1024, 1 << 30),
        ("feed-stall-ms", 100, 3_600_000),
        ("max-sessions", 1, 1_000_000),
        ("max-connections-per-ip", 1, 1_000_000),
        ("max-connections", 1, 1_000_000),
        ("header-timeout-ms", 100, 600_000),
        ("ws-max-message-bytes", 1024, 16 << 20),
        ("ws-pings-per-sec", 1, 1_000_000),
        ("ws-ping-burst", 1, 1_000_000),
        ("ws-read-burst-bytes", 1024, 1 << 30),
        ("max-subscriptions", 1, 1_000_000),
        ("max-pending-subscriptions", 0, 1_000_000),
        ("commit-interval-ms", 1, 10_000),
        ("realtime-priority", 0, 98),
        ("snapshot-every", 1, 1_000_000),
        ("snapshot-interval-ms", 10, 3_600_000),
        ("clean-after-ms", 1, 3_600_000),
        ("max-failures", 1, 1000),
        ("failure-window-ms", 1, 3_600_000),
        ("rollout-concurrency", 1, slack),
        ("rollout-slice-us", 0, 10_000_000),
        ("keep-guest-versions", 2, 1000),
        ("rollout-probation-ms", 0, 600_000),
        ("canary-matches", 0, slack),
        ("alive-timeout", 10, 180),
        ("recovery-min-interval", 1, 3600),
        ("recovery-timeout", 1, 86_400),
    ];
    for &(flag, min, max) in bounds {
        let refused = |got: u64| format!("error: --{flag} must be between {min} and {max}, got {got}");
        let accepted = |got: u64| {
            let mut diff = [format!("{flag}={got}"), "feed-connect=\"f:1\"".to_owned()];
            diff.sort();
            diff.join(" ")
        };
        let mut values = vec![(max, accepted(max)), (max + 1, refused(max + 1))];
        match min.checked_sub(1) {
            Some(below) => values.extend([(min, accepted(min)), (below, refused(below))]),
            // 0 is the lowest a flag takes: -1 is not a number for it.
            None => values.push((0, accepted(0))),
        }
        for (value, expected) in values {
            let mut expected = expected;
            // A setting at its default shows no difference.
            if defaults.get(flag).and_then(toml::Value::as_integer) == i64::try_from(value).ok() {
                expected = "feed-connect=\"f:1\"".to_owned();
            }
            rows.push((format!("serve --feed-connect f:1 --{flag} {value}"), expected));
        }
    }
    // 0 (no limit), or a rate from 1 KiB a second.
    for (value, accepted) in [
        (0, true),
        (1023, false),
        (1024, true),
        (1 << 30, true),
        ((1 << 30) + 1, false),
    ] {
        let expected = if value == 64 * 1024 {
            "feed-connect=\"f:1\"".to_owned()
        } else if accepted {
            format!("feed-connect=\"f:1\" ws-read-bytes-per-sec={value}")
        } else {
            format!("error: --ws-read-bytes-per-sec must be 0 (no limit) or between 1024 and 1073741824, got {value}")
        };
        rows.push((
            format!("serve --feed-connect f:1 --ws-read-bytes-per-sec {value}"),
            expected,
        ));
    }
    for (argv, expected) in &rows {
        check(argv, "", false, expected);
    }
    // The file goes through the same validation.
    check(
        "serve --feed-connect f:1",
        "max-matches = 0",
        false,
        "error: --max-matches must be between 1 and 1000000, got 0",
    );
}

#[test]
fn into_config_converts_units() {
    let config = settings(
        "serve --feed-connect f:1 --guest-memory-mib 64 --no-durability --hibernate-after-ms 0",
        "",
        false,
    )
    .expect("parses")
    .into_config()
    .expect("valid");
    assert_eq!(config.guest_memory_bytes, 64 << 20);
    assert!(!config.durability);
    assert_eq!(config.hibernate_after, None, "0 = never");
    let config = Settings {
        feed_connect: Some("f:1".into()),
        ..Settings::default()
    }
    .into_config()
    .expect("valid");
    assert_eq!(config.hibernate_after, Some(Duration::from_secs(30)));
    assert_eq!(config.guest_call_deadline, Duration::from_millis(100));
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert!(config.durability);
    // A memory size that would wrap to 0 bytes is refused, not wrapped into range.
    let huge = format!("serve --feed-connect f:1 --guest-memory-mib {}", 1_usize << 44);
    assert!(outcome(&huge, "", false).starts_with("error: --guest-memory-mib must be between 2 and 4096"));
}

#[test]
fn resolve_reads_the_file_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("touchline.toml");
    std::fs::write(&path, "feed-connect = 'f:1'\nmax-sessions = 1\n").expect("write");
    let resolve = |argv: &[&str]| {
        let matches = Cli::command()
            .mut_subcommands(|s| s.mut_args(|a| a.env(None)))
            .try_get_matches_from(argv)
            .expect("parses");
        let (_, sub) = matches.subcommand().expect("a subcommand");
        let (Cli::Serve(args) | Cli::Demo { server: args, .. }) = Cli::from_arg_matches(&matches).expect("parses");
        args.resolve(sub)
    };
    let path_str = path.to_str().expect("utf-8 temp path");
    let s = resolve(&["t", "serve", "--config", path_str, "--max-matches", "9"]).expect("resolves");
    assert_eq!(
        (s.feed_connect.as_deref(), s.max_sessions, s.max_matches),
        (Some("f:1"), 1, 9)
    );
    let s = resolve(&["t", "demo", "--config", path_str]).expect("resolves");
    assert_eq!(s.max_sessions, 1);
    let missing = dir.path().join("missing.toml");
    let err = resolve(&["t", "serve", "--config", missing.to_str().expect("utf-8")]).expect_err("missing file");
    assert!(
        matches!(err, ConfigError::Read { ref path, .. } if *path == missing),
        "{err:?}"
    );
    std::fs::write(&path, "no-such-setting = 1\n").expect("write");
    let err = resolve(&["t", "serve", "--config", path_str]).expect_err("unknown key");
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(chain.contains(path_str) && chain.contains("no-such-setting"), "{chain}");
}

#[test]
fn the_flags_users_know() {
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    let arg = |id: &str| command.get_arguments().find(|a| a.get_id() == id).expect(id).clone();
    let recovery_token = arg("recovery_token");
    assert_eq!(
        recovery_token.get_env().and_then(|e| e.to_str()),
        Some("TOUCHLINE_RECOVERY_TOKEN")
    );
    assert!(recovery_token.is_hide_env_values_set());
    let token = arg("admin_token");
    assert_eq!(token.get_env().and_then(|e| e.to_str()), Some("TOUCHLINE_ADMIN_TOKEN"));
    assert!(token.is_hide_env_values_set());
    assert!(arg("native_model").is_hide_set());
    assert_eq!(arg("data").get_long(), Some("data"));
    assert_eq!(arg("no_durability").get_long(), Some("no-durability"));
    // Every flag is a TOML key, and every TOML key a flag.
    let mut keys: Vec<String> = toml::Table::try_from(Settings {
        feed_listen: Some(SocketAddr::from(([127, 0, 0, 1], 1))),
        feed_connect: Some(String::new()),
        guest: Some(PathBuf::new()),
        admin_token: Some(String::new()),
        producers_file: Some(PathBuf::new()),
        recovery_url: Some(String::new()),
        api_url: Some(String::new()),
        descriptions_file: vec![PathBuf::new()],
        recovery_token: Some(String::new()),
        max_connections: Some(1),
        cluster: vec![String::new()],
        node_id: Some(String::new()),
        advertise_url: Some(String::new()),
        ..Settings::default()
    })
    .expect("settings as TOML")
    .keys()
    .cloned()
    .collect();
    let mut flags: Vec<String> = command
        .get_arguments()
        .filter(|a| a.get_id() != "config")
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    keys.sort();
    flags.sort();
    assert_eq!(keys, flags);
}

/// `serve <args>` (flags only) made into a checked configuration.
fn serve_config(args: &[&str]) -> Result<ServeConfig, ConfigError> {
    let all = [&["serve"], args].concat();
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    let matches = command.try_get_matches_from(all).expect("flags parse");
    ServeArgs::from_arg_matches(&matches)
        .expect("args")
        .settings
        .into_config()
}

#[test]
fn cluster_flags_make_a_cluster_config_and_need_a_node_id() {
    let parse = |args: &[&str]| serve_config(&[&["--feed-listen", "127.0.0.1:0"], args].concat());
    assert!(parse(&[]).expect("single node").cluster.is_none());
    let config = parse(&[
        "--cluster",
        "nats://a:4222,nats://b:4222",
        "--node-id",
        "n1",
        "--partitions",
        "16",
        "--lease-ttl-ms",
        "12000",
        "--cluster-replicas",
        "3",
    ])
    .expect("a cluster")
    .cluster
    .expect("cluster config");
    assert_eq!(config.urls, ["nats://a:4222", "nats://b:4222"]);
    assert_eq!(config.node_id.as_str(), "n1");
    assert_eq!(config.partitions.count(), 16);
    assert_eq!(config.lease_ttl, Duration::from_secs(12));
    assert_eq!(config.replicas, 3);
    assert!(matches!(
        parse(&["--cluster", "nats://a:4222"]),
        Err(ConfigError::NoNodeId)
    ));
    let cluster = |extra: &[&'static str]| {
        let mut args = vec!["--cluster", "nats://a:4222", "--node-id", "n1"];
        args.extend_from_slice(extra);
        parse(&args)
    };
    assert!(matches!(
        cluster(&["--cluster-replicas", "9"]),
        Err(ConfigError::OutOfRange {
            name: "--cluster-replicas",
            ..
        })
    ));
    assert!(matches!(
        cluster(&["--lease-ttl-ms", "100"]),
        Err(ConfigError::OutOfRange {
            name: "--lease-ttl-ms",
            ..
        })
    ));
    assert!(matches!(
        parse(&["--cluster", "nats://a:4222", "--node-id", "bad id!"]),
        Err(ConfigError::Cluster { flag: "--node-id", .. })
    ));
    assert!(matches!(
        parse(&["--cluster", "nats://a:4222,nats://bad host:1", "--node-id", "n1"]),
        Err(ConfigError::ClusterUrl { .. })
    ));
    assert!(matches!(
        parse(&["--node-id", "n1"]),
        Err(ConfigError::NodeIdWithoutCluster)
    ));
}

#[test]
fn only_a_cluster_node_may_read_no_feed() {
    let parse = serve_config;
    assert!(matches!(parse(&[]), Err(ConfigError::NoFeed)));
    let node = parse(&["--cluster", "nats://a:4222", "--node-id", "c"]).expect("a node without a feed");
    assert!(node.feed_listen.is_none() && node.feed_connect.is_none() && node.cluster.is_some());
}
