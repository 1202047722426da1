//! NATS failures: NATS down means `unavailable` and not ready, connections
//! stay open, and the node comes back by itself when NATS returns; with a
//! file-backed stream nothing acked is lost and the epoch stays. Each test
//! runs its own nats-server on a free port, so the shared one is never
//! stopped.
#![allow(clippy::unwrap_used)]

use crate::{common, outage};

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Server;
use serde_json::json;

/// A nats-server with JetStream of this test's own, killed however the
/// test ends.
pub(crate) struct OwnNats {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl OwnNats {
    pub(crate) fn start() -> OwnNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "hubcast-test-nats-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let mut n = OwnNats {
            child: None,
            port,
            dir,
        };
        n.resume();
        n
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port and store).
    pub(crate) fn resume(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not start on {}", self.port);
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_and_back() {
    let mut nats = OwnNats::start();
    let mut config = common::nats_config("outage", "outage-node");
    config.nats_url = nats.url();
    let s = Server::with_config(config, None).await;
    let (mut sub, mut p, epoch) = outage::traffic(&s).await;

    nats.kill();
    let timed_out = outage::assert_down(&s, &mut p, &mut sub).await;

    // NATS returns with its store: the room goes on where it was. A
    // publish answered `timeout` may have been buffered by the client and
    // stored on its reconnecting: then it is offset 2, and delivered.
    nats.resume();
    outage::wait_ready(&s).await;
    let ack = p.publish("r", json!(3)).await;
    let next = if ack["offset"] == 3 && timed_out {
        let m = sub.expect("message").await;
        assert_eq!(
            (m["offset"].clone(), m["data"].clone()),
            (json!(2), json!(2))
        );
        3
    } else {
        assert_eq!(ack["offset"], 2, "offset 1 was kept on disk");
        2
    };
    assert_eq!(ack["epoch"], epoch, "nothing acked was lost: same epoch");
    let m = sub.expect("message").await;
    assert_eq!(
        (m["offset"].clone(), m["data"].clone()),
        (json!(next), json!(3))
    );
    s.stop().await;
}
