//! `hubcast` child processes: free ports, the port a child bound,
//! its stderr, signals, and running a test alone in a process of its own.

use super::*;

/// A TCP port free on 127.0.0.1 right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `http://127.0.0.1:{port}{path}` answers 200 (a `hubcast
/// serve` child coming up); panics after 10 s.
pub(crate) async fn wait_for(port: u16, path: &str) {
    for _ in 0..200 {
        if reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing answered 200 on 127.0.0.1:{port}{path}");
}

/// Sends SIGTERM to a child process.
pub(crate) fn send_term(child: &std::process::Child) {
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits for a child to exit; returns its status and what it wrote to
/// its (piped) stderr, all of it also when [`listening_port`] took the pipe.
pub(crate) async fn wait_stderr(
    mut child: std::process::Child,
) -> (std::process::ExitStatus, String) {
    let reader = child.stderr.is_none().then(|| {
        let mut readers = STDERR_READERS.lock().unwrap();
        let at = readers
            .iter()
            .rposition(|(pid, _)| *pid == child.id())
            .expect("the child's stderr is piped");
        readers.remove(at).1
    });
    tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let err = match reader {
            Some(reader) => reader.join().unwrap(),
            None => {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                err
            }
        };
        (status, err)
    })
    .await
    .unwrap()
}

/// The threads reading the stderr of children [`listening_port`] took,
/// by process id (the newest last: ids are reused).
static STDERR_READERS: std::sync::Mutex<Vec<(u32, std::thread::JoinHandle<String>)>> =
    std::sync::Mutex::new(Vec::new());

/// The port a `hubcast serve --listen 127.0.0.1:0` child bound, read from
/// its log line `hubcast listening on http://ADDR ...` (text or JSON) on
/// its piped stderr; a thread keeps reading the rest, which
/// [`wait_stderr`] returns whole. No port is picked before the child binds
/// it, so no other process can take it meanwhile.
pub(crate) async fn listening_port(child: &mut std::process::Child) -> u16 {
    let stderr = child.stderr.take().expect("the child's stderr is piped");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tx = Some(tx);
        let mut all = String::new();
        let mut stderr = std::io::BufReader::new(stderr);
        let mut line = Vec::new();
        while stderr.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let text = String::from_utf8_lossy(&line);
            if let Some(port) = logged_port(&text)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(port);
            }
            all.push_str(&text);
            line.clear();
        }
        all
    });
    match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(port)) => {
            STDERR_READERS.lock().unwrap().push((child.id(), reader));
            port
        }
        // The child's stderr ended (it exited) before the line.
        Ok(Err(_)) => panic!(
            "the child logged no listening address:\n{}",
            reader.join().unwrap()
        ),
        Err(_) => panic!("the child logged no listening address within {WAIT:?}"),
    }
}

/// The port in a `hubcast listening on http://127.0.0.1:PORT (...)` line.
fn logged_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let rest = &rest[rest.find("://")? + 3..];
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '/')
        .collect();
    addr.parse::<SocketAddr>().ok().map(|a| a.port())
}

/// Runs the calling test again alone in a process of its own (this test
/// binary, `--exact test`), for a test that reads process-wide state such
/// as the metrics recorder, which every server of this process shares.
/// Returns `true` in the calling process once that run passed (the caller
/// then returns), `false` in the process of its own (the caller goes on
/// with its body). `test` is the test's path, e.g. `metrics::name`.
pub(crate) fn in_own_process(test: &str) -> bool {
    const VAR: &str = "HUBCAST_TEST_OWN_PROCESS";
    if std::env::var(VAR).is_ok_and(|t| t == test) {
        return false;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1"])
        .env(VAR, test)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} in its own process:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
