//! Tests of the crate.

use super::*;

fn options(toml: &str) -> Result<ServerOptions, String> {
    let c: ServerConfig = toml::from_str(toml).map_err(|e| e.to_string())?;
    ServerOptions::from_config(&c).map_err(|e| e.to_string())
}

#[test]
fn server_table_values_are_checked_and_errors_name_the_field() {
    assert_eq!(options("").unwrap().log_sync, LogSync::Full);
    assert_eq!(
        options("log_sync = \"normal\"").unwrap().log_sync,
        LogSync::Normal
    );
    let e = options("log_sync = \"sometimes\"").unwrap_err();
    assert!(e.contains("log_sync") && e.contains("sometimes"), "{e}");
    assert!(e.contains("`full`") && e.contains("`normal`"), "{e}");
    let e = options("listen = \"nowhere\"").unwrap_err();
    assert!(e.contains("[server] listen = \"nowhere\""), "{e}");
    for (listen, port) in [("localhost:8181", 8181), ("LOCALHOST:0", 0)] {
        let addr = options(&format!("listen = \"{listen}\"")).unwrap().listen;
        assert!(
            addr.ip().is_loopback() && addr.port() == port,
            "{listen}: {addr}"
        );
    }
    assert_eq!(
        options("listen = \"[::1]:9\"").unwrap().listen,
        "[::1]:9".parse::<SocketAddr>().unwrap()
    );
    for garbage in ["localhost", "localhost:http", ":8080", "localhost:99999"] {
        let e = options(&format!("listen = \"{garbage}\"")).unwrap_err();
        assert!(
            e.contains(&format!("[server] listen = \"{garbage}\"")),
            "{e}"
        );
    }
    for (toml, field) in [
        ("max_tokens = 0", "max_tokens"),
        ("max_body_bytes = 10", "max_body_bytes"),
        ("max_body_bytes = 99999999999", "max_body_bytes"),
        ("request_timeout_secs = 0", "request_timeout_secs"),
        ("retention_days = 0", "retention_days"),
    ] {
        let e = options(toml).unwrap_err();
        assert!(e.contains(&format!("[server] {field} = ")), "{toml}: {e}");
    }
}

#[test]
fn connection_limits_have_defaults_and_ranges_that_name_the_field() {
    let d = options("").unwrap();
    assert_eq!(d.header_read_timeout, Duration::from_secs(30));
    assert_eq!(d.idle_timeout, Duration::from_secs(75));
    assert_eq!(d.max_connections, 512);
    let o = options("header_read_timeout_secs = 2\nidle_timeout_secs = 3\nmax_connections = 4")
        .unwrap();
    assert_eq!(o.header_read_timeout, Duration::from_secs(2));
    assert_eq!(o.idle_timeout, Duration::from_secs(3));
    assert_eq!(o.max_connections, 4);
    for line in [
        "header_read_timeout_secs = 0",
        "header_read_timeout_secs = 3601",
        "idle_timeout_secs = 0",
        "idle_timeout_secs = 86401",
        "max_connections = 0",
        "max_connections = 1000001",
    ] {
        let e = options(line).unwrap_err();
        assert!(
            e.contains(&format!("[server] {line}: expected 1 to ")),
            "{e}"
        );
    }
    assert!(options("max_connections = -1").is_err());
}
