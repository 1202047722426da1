//! `Proxy`: a TCP proxy in front of a server, for tests of connection
//! loss.

use super::*;

/// A TCP proxy in front of a server, for tests of connection loss: `cut`
/// drops every open connection, `refuse` closes new ones at once,
/// `blackhole_down` drops what the server sends (its acks never arrive),
/// and `retarget` sends new connections to another server.
pub(crate) struct Proxy {
    pub addr: SocketAddr,
    state: std::sync::Arc<ProxyState>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    target: std::sync::Mutex<Option<SocketAddr>>,
    refuse: std::sync::atomic::AtomicBool,
    blackhole_down: std::sync::atomic::AtomicBool,
    conns: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    pub(crate) async fn start(target: SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new(ProxyState::default());
        *state.target.lock().unwrap() = Some(target);
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                if st.refuse.load(Relaxed) {
                    drop(down);
                    continue;
                }
                let Some(target) = *st.target.lock().unwrap() else {
                    continue;
                };
                let st2 = st.clone();
                let task = tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut dr, mut dw) = down.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    let to_server = async {
                        let mut buf = vec![0u8; 16384];
                        while let Ok(n) = dr.read(&mut buf).await {
                            if n == 0 || uw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let to_client = async {
                        let mut buf = vec![0u8; 16384];
                        while let Ok(n) = ur.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            if !st2.blackhole_down.load(Relaxed)
                                && dw.write_all(&buf[..n]).await.is_err()
                            {
                                break;
                            }
                        }
                    };
                    tokio::select! { _ = to_server => {}, _ = to_client => {} }
                });
                st.conns.lock().unwrap().push(task);
            }
        });
        Proxy {
            addr,
            state,
            accept,
        }
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Drops every open connection (both sockets close).
    pub(crate) fn cut(&self) {
        for t in self.state.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub(crate) fn refuse(&self, on: bool) {
        self.state
            .refuse
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn blackhole_down(&self, on: bool) {
        self.state
            .blackhole_down
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn retarget(&self, target: SocketAddr) {
        *self.state.target.lock().unwrap() = Some(target);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
