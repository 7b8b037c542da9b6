//! Serving the routes on their own thread, with a clean stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::context::WebContext;
use crate::routes::routes;

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// The address to listen on (default 127.0.0.1:8080).
    pub addr: SocketAddr,
    /// The bearer token every route but `/healthz` needs; `None`: no token.
    pub token: Option<String>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The address is taken or not ours.
    #[error("cannot listen on {addr} (choose another address with --http ADDR)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The server's thread or runtime could not start.
    #[error("cannot start the web server: {0}")]
    Start(std::io::Error),
}

/// The running server; stops when dropped.
pub struct WebServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    /// Binds `config.addr` (an error, not a panic, if it is taken) and serves on a thread of
    /// its own. A non-loopback address without a token is served, with a loud warning.
    pub fn start(config: WebConfig, context: WebContext) -> Result<WebServer, WebError> {
        if !config.addr.ip().is_loopback() && config.token.is_none() {
            tracing::warn!(
                addr = %config.addr,
                "the dashboard and API are OPEN to the network with no token: anyone who reaches \
                 this address can read the data and use the model; set --api-token"
            );
        }
        let bind = |source| WebError::Bind {
            addr: config.addr,
            source,
        };
        let listener = std::net::TcpListener::bind(config.addr).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("clickflow-web")
            .enable_all()
            .build()
            .map_err(WebError::Start)?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let token: Option<Arc<str>> = config.token.map(Into::into);
        let thread = std::thread::Builder::new()
            .name("clickflow-web".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            tracing::error!(%error, "the web server cannot use its socket");
                            return;
                        }
                    };
                    warp::serve(routes(context, token))
                        .incoming(listener)
                        .graceful(async {
                            let _ = stopped.await;
                        })
                        .run()
                        .await;
                });
            })
            .map_err(WebError::Start)?;
        Ok(WebServer {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port chosen, when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, finishes the requests in flight, and waits.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}
