//! The servers under load: given by URL, or started by the bench tool from
//! its own binary so one command reproduces a figure.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::net::{Node, get};
use super::process::Process;

/// The nodes of a run, and the processes to measure.
pub(crate) struct Nodes {
    /// Where the load goes: connection `i` to node `i % len`.
    pub nodes: Vec<Node>,
    /// Server processes whose CPU and memory are reported.
    pub pids: Vec<u32>,
    /// Nodes this run started; stopped when dropped.
    children: Vec<Process>,
    /// Their logs (stderr), removed with them.
    logs: Vec<PathBuf>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.children {
            c.kill();
        }
        for log in &self.logs {
            let _ = std::fs::remove_file(log);
        }
    }
}

/// A free loopback port (the listener is closed again before the node binds it).
pub(crate) fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

impl Nodes {
    /// Nodes that were started by someone else.
    pub(crate) fn given(urls: &[String], pids: &[u32]) -> anyhow::Result<Nodes> {
        let urls = if urls.is_empty() {
            vec!["ws://127.0.0.1:8080/ws".to_string()]
        } else {
            urls.to_vec()
        };
        Ok(Nodes {
            nodes: urls
                .iter()
                .map(|u| Node::from_url(u))
                .collect::<anyhow::Result<_>>()?,
            pids: pids.to_vec(),
            children: Vec::new(),
            logs: Vec::new(),
        })
    }

    /// Starts `n` nodes of this binary (`hubcast serve --listen 127.0.0.1:PORT
    /// ARGS...`) and waits until each answers `/readyz`.
    pub(crate) async fn spawn(n: usize, serve_args: &[String]) -> anyhow::Result<Nodes> {
        let exe = std::env::current_exe().context("find the hubcast binary")?;
        let mut nodes = Nodes {
            nodes: Vec::new(),
            pids: Vec::new(),
            children: Vec::new(),
            logs: Vec::new(),
        };
        for k in 0..n {
            let addr = free_port()?;
            let log = std::env::temp_dir()
                .join(format!("hubcast-bench-{}-node{k}.log", std::process::id()));
            let err =
                std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
            let mut child = Process::default();
            child
                .start(
                    Command::new(&exe)
                        .arg("serve")
                        .arg("--listen")
                        .arg(addr.to_string())
                        .args(serve_args)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(err),
                )
                .with_context(|| format!("start {}", exe.display()))?;
            nodes.pids.extend(child.pid());
            nodes.children.push(child);
            nodes.logs.push(log);
            nodes.nodes.push(Node::at(addr));
        }
        for (k, node) in nodes.nodes.iter().enumerate() {
            let mut ready = false;
            for _ in 0..100 {
                if let Some(status) = nodes.children.get_mut(k).and_then(Process::exited) {
                    let log = std::fs::read_to_string(&nodes.logs[k]).unwrap_or_default();
                    bail!("node {k} exited ({status}):\n{log}");
                }
                if let Some((200..=299, _)) =
                    get(node.addr, "/readyz", Duration::from_secs(30)).await
                {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !ready {
                bail!("node {k} at {} did not become ready in 10 s", node.addr);
            }
        }
        Ok(nodes)
    }
}
