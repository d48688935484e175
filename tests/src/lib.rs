//! Helpers for end-to-end tests: run the real `kbroker` binary on a free
//! loopback port with its own data directory, stop it, kill it, restart it.

use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a broker may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker binary: `KBROKER_BIN`, else `target/debug/kbroker` of this workspace.
pub fn broker_binary() -> PathBuf {
    if let Ok(path) = std::env::var("KBROKER_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/kbroker")
}

pub struct BrokerProcess {
    child: Option<Child>,
    /// The loopback address it listens on (127.0.0.1, 127.0.0.2, ...).
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    overrides: Vec<String>,
    log_path: PathBuf,
}

impl BrokerProcess {
    /// Starts a broker with a fresh data directory and `key=value` overrides.
    pub fn start(overrides: &[&str]) -> BrokerProcess {
        BrokerProcess::start_on("127.0.0.1", overrides)
    }

    /// Starts a broker listening on `host` (a loopback address).
    pub fn start_on(host: &str, overrides: &[&str]) -> BrokerProcess {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut broker = BrokerProcess {
            child: None,
            host: host.to_string(),
            port: free_port_on(host),
            log_path: temp.path().join("broker.log"),
            data_dir,
            _temp: Some(temp),
            overrides: overrides
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        };
        broker.spawn();
        broker
    }

    /// The running broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn spawn(&mut self) {
        let binary = broker_binary();
        assert!(
            binary.exists(),
            "broker binary {} not found: run `cargo build -p broker` first (or set KBROKER_BIN)",
            binary.display()
        );
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let mut command = Command::new(&binary);
        command
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://{}:{}", self.host, self.port))
            .arg("--override")
            .arg(format!("log.dirs={}", self.data_dir.display()))
            // Off: brokers of a test share a host, and the metrics port
            // 9404 with it (the Python tests scrape it).
            .arg("--override")
            .arg("metrics.listener=");
        // `{port}` in an override is the broker's own (a `listeners`
        // override that keeps the PLAINTEXT one and adds others).
        for item in &self.overrides {
            command
                .arg("--override")
                .arg(item.replace("{port}", &self.port.to_string()));
        }
        let child = command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning the broker");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if TcpStream::connect((self.host.as_str(), self.port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                panic!(
                    "broker exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "broker did not listen within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited with 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process stops, its sockets stay open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`BrokerProcess::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .status();
        }
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The broker's output so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.resume();
        self.kill9();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- broker log (last 60 lines) ----");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port on `host` (a loopback address), free now and outside the
/// ephemeral range, never handed out twice by this process.
///
/// A port from the ephemeral range (bind to port 0, then let go) can be
/// given to some client's outgoing connection before the broker or etcd
/// binds it, or binds it again after a restart, and the start fails with
/// "address already in use". Below `ip_local_port_range` only a process
/// that asks for the port by number can take it.
pub fn free_port_on(host: &str) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let (start, len) = listen_port_window();
    // Each process starts at a point of its own, so that a test binary
    // does not reuse the ports the previous one left in TIME_WAIT.
    let first = (std::process::id().wrapping_mul(7919)) % len;
    let _ = NEXT.compare_exchange(u32::MAX, first, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..len {
        let port = (start + NEXT.fetch_add(1, Ordering::Relaxed) % len) as u16;
        // std's TcpListener sets SO_REUSEADDR: a port in TIME_WAIT is free.
        if TcpListener::bind((host, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {host} in {start}..{}", start + len);
}

/// The ports below the ephemeral range: (first, count).
fn listen_port_window() -> (u32, u32) {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768)
        .clamp(1024, 65536);
    if low >= 12000 {
        (10000, low - 10000)
    } else {
        (low / 2, low - low / 2)
    }
}

/// One etcd member (Debian's `etcd-server`) on 127.0.0.1 with a data
/// directory of its own, killed when dropped.
pub struct EtcdProcess {
    child: Child,
    pub endpoint: String,
    _temp: tempfile::TempDir,
}

impl EtcdProcess {
    pub fn start() -> EtcdProcess {
        let binary = which("etcd").unwrap_or_else(|| {
            panic!("etcd not found: `apt-get install etcd-server` (scripts/test.sh does it)")
        });
        let temp = tempfile::tempdir().expect("temp dir");
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = File::create(temp.path().join("etcd.log")).expect("etcd log");
        let child = Command::new(binary)
            .args(["--name", "etcd0", "--data-dir"])
            .arg(temp.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("etcd0={peer}")])
            .args([
                "--initial-cluster-state",
                "new",
                "--log-level",
                "warn",
                "--logger",
                "zap",
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning etcd");
        let mut etcd = EtcdProcess {
            child,
            endpoint: client,
            _temp: temp,
        };
        let address = etcd.endpoint.trim_start_matches("http://").to_string();
        let started = Instant::now();
        while !healthy(&address) {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                panic!("etcd exited with {status}");
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "etcd did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcd's `/health` says `"health":"true"`.
fn healthy(address: &str) -> bool {
    use std::io::Write;
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if write!(stream, "GET /health HTTP/1.0\r\nHost: {address}\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}

/// Session settings of test clusters: a broker is dead to the others 3 s
/// after its last keep-alive.
pub const SESSION_TIMEOUT_MS: u64 = 3000;
pub const HEARTBEAT_INTERVAL_MS: u64 = 500;

/// Brokers with node ids 1..=n on 127.0.0.1..=n, on one etcd of their own.
pub struct Cluster {
    pub brokers: Vec<BrokerProcess>,
    pub etcd: EtcdProcess,
}

impl Cluster {
    pub fn start(size: usize, overrides: &[&str]) -> Cluster {
        let etcd = EtcdProcess::start();
        let brokers = (1..=size)
            .map(|node_id| {
                let mut all = cluster_overrides(&etcd, node_id as i32);
                all.extend(overrides.iter().map(std::string::ToString::to_string));
                let all: Vec<&str> = all.iter().map(String::as_str).collect();
                BrokerProcess::start_on(&format!("127.0.0.{node_id}"), &all)
            })
            .collect();
        Cluster { brokers, etcd }
    }

    /// The broker with `node_id`.
    pub fn broker(&mut self, node_id: i32) -> &mut BrokerProcess {
        &mut self.brokers[node_id as usize - 1]
    }

    pub fn bootstrap(&self, node_id: i32) -> String {
        self.brokers[node_id as usize - 1].bootstrap()
    }
}

/// The overrides that put broker `node_id` in cluster mode on `etcd`.
pub fn cluster_overrides(etcd: &EtcdProcess, node_id: i32) -> Vec<String> {
    vec![
        format!("node.id={node_id}"),
        format!("etcd.endpoints={}", etcd.endpoint),
        format!("broker.session.timeout.ms={SESSION_TIMEOUT_MS}"),
        format!("broker.heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"),
    ]
}

/// Polls `check` every 100 ms until it gives `Some`; panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
