//! The real `banter` binary as a child process, for tests that need what only a process
//! shows: its memory, its exit, its log output, a `kill -9`, a second process beside it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A loopback address nobody listens on (bind port 0, read it, close).
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A scratch directory, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("banter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A SQLite database URL in this directory.
    pub fn database(&self) -> String {
        format!("sqlite://{}", self.0.join("banter.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything it wrote to stderr so far.
    stderr: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts `banter` on `addr` with `database` and more flags, and waits until it
    /// listens. `RUST_LOG` is `log` (e.g. "warn").
    pub async fn start(addr: SocketAddr, database: &str, flags: &[&str], log: &str) -> Self {
        let mut server = Self::spawn(addr, database, flags, log);
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "banter exited with {status} before listening:\n{}",
                    server.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "banter did not start listening on {addr}:\n{}",
            server.stderr()
        );
    }

    /// Starts it without waiting for anything.
    pub fn spawn(addr: SocketAddr, database: &str, flags: &[&str], log: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_banter"))
            .args(["--addr", &addr.to_string(), "--database", database])
            .args(flags)
            .env("RUST_LOG", log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start banter");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self {
            child,
            addr,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Resident memory in bytes, from /proc.
    pub fn rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// Waits for the process to end, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private redis-server on a free loopback port (Debian's package), stopped on drop.
pub struct Redis {
    pub child: Child,
    pub port: u16,
}

impl Redis {
    pub async fn start() -> Redis {
        let binary = ["/usr/bin/redis-server", "/usr/sbin/redis-server"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .expect(
                "redis-server is not installed: apt-get install redis-server (scripts/test does)",
            );
        let port = free_addr().port();
        let mut child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Redis { child, port };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.resume_quietly();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn resume_quietly(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
    }
}

/// A private PostgreSQL (Debian's postgresql package) on a free loopback port, with its
/// data and its unix socket in a scratch directory, stopped and removed on drop. PostgreSQL
/// refuses to run as root: under root, its commands run as the `postgres` user.
pub struct Postgres {
    pub child: Child,
    pub port: u16,
    bin: std::path::PathBuf,
    /// Holds its data and socket; removed after the server stops.
    dir: TempDir,
}

impl Postgres {
    /// initdb, start, and create the database `banter` (user `banter`, trusted on
    /// loopback only).
    pub async fn start() -> Postgres {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bin = postgres_bin_dir();
        let dir = TempDir::new(&format!("postgres-{n}"));
        let run_as = if current_uid() == 0 {
            let ids = (id_of("-u"), id_of("-g"));
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir.0)
                .status()
                .expect("chown");
            assert!(status.success(), "chown the postgres scratch directory");
            Some(ids)
        } else {
            None
        };
        let data = dir.0.join("data");
        let sockets = dir.0.join("sockets");
        let this = |command: &str| {
            let mut command = Command::new(bin.join(command));
            if let Some((uid, gid)) = run_as {
                use std::os::unix::process::CommandExt;
                command.uid(uid).gid(gid);
            }
            command.current_dir(&dir.0);
            command
        };
        // The socket directory, made by the user that serves it.
        let status = {
            let mut mkdir = Command::new("mkdir");
            if let Some((uid, gid)) = run_as {
                use std::os::unix::process::CommandExt;
                mkdir.uid(uid).gid(gid);
            }
            mkdir.arg(&sockets).status().expect("mkdir")
        };
        assert!(status.success());
        let initdb = this("initdb")
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "banter",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .arg("--no-sync")
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed:\n{}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_addr().port();
        let child = this("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&sockets)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            // A scratch database: durability is not what these tests are about.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let mut postgres = Postgres {
            child,
            port,
            bin,
            dir,
        };
        for _ in 0..400 {
            let ready = postgres
                .tool("pg_isready")
                .args(["-q", "-d", "postgres"])
                .status()
                .expect("pg_isready");
            if ready.success() {
                let created = postgres
                    .tool("createdb")
                    .arg("banter")
                    .output()
                    .expect("createdb");
                assert!(
                    created.status.success(),
                    "createdb failed:\n{}",
                    String::from_utf8_lossy(&created.stderr)
                );
                return postgres;
            }
            if let Ok(Some(status)) = postgres.child.try_wait() {
                panic!("postgres exited with {status} before accepting connections");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("postgres did not start on port {port}");
    }

    /// A client tool of this installation, pointed at this server over TCP.
    fn tool(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join(name));
        command.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "banter",
        ]);
        command.stdout(Stdio::null());
        command
    }

    /// The database `banter`, over TCP.
    pub fn url(&self) -> String {
        format!("postgres://banter@127.0.0.1:{}/banter", self.port)
    }

    /// Runs SQL with psql (for tests that look under the storage).
    pub fn psql(&self, sql: &str) -> String {
        let output = self
            .tool("psql")
            .args(["-d", "banter", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdout(Stdio::piped())
            .output()
            .expect("psql");
        assert!(
            output.status.success(),
            "psql failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown (SIGQUIT): the postmaster takes its backends down with it.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's PostgreSQL binaries, the newest installed (15 on the test machines).
fn postgres_bin_dir() -> std::path::PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_unstable();
    let version = versions
        .into_iter()
        .rev()
        .find(|v| std::path::Path::new(&format!("/usr/lib/postgresql/{v}/bin/initdb")).exists())
        .expect("PostgreSQL is not installed: apt-get install postgresql");
    std::path::PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"))
}

/// This process's real uid, from /proc.
fn current_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next()?.parse().ok())
        .unwrap_or(u32::MAX)
}

/// The postgres user's uid (`-u`) or gid (`-g`).
fn id_of(which: &str) -> u32 {
    let output = Command::new("id")
        .args([which, "postgres"])
        .output()
        .expect("id postgres");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a postgres user (Debian's postgresql package makes one)")
}
