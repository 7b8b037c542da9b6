//! Serving the routes on their own thread, with a clean stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::context::WebContext;
use crate::contract::with_allow;
use crate::errors::{recover, refuse};
use crate::https::TlsFiles;
use crate::routes::routes;

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// The address to listen on (default 127.0.0.1:8080).
    pub addr: SocketAddr,
    /// The bearer token every route but `/healthz` needs; `None`: no token. At least
    /// [`MIN_TOKEN_BYTES`] long.
    pub token: Option<String>,
    /// Host names (beside `localhost`, `127.0.0.1` and `[::1]`) a server on a loopback
    /// address answers to; see [`serving`].
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Origins (`https://shop.example`) whose pages may call the API from a browser (CORS);
    /// none by default: only the dashboard's own page.
    pub cors_origins: Vec<String>,
    /// How long a `/api/v1/stream` connection lasts before the browser reconnects.
    pub stream_connection: Duration,
}

impl Default for WebConfig {
    /// 127.0.0.1:8080, plain HTTP, no token, no other host names or origins.
    fn default() -> WebConfig {
        WebConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            allowed_hosts: Vec::new(),
            tls: None,
            cors_origins: Vec::new(),
            stream_connection: crate::stream::DEFAULT_CONNECTION,
        }
    }
}

/// The shortest token accepted: 16 bytes (a guessable token is no protection).
pub const MIN_TOKEN_BYTES: usize = 16;

/// The routes as served: with a `Host` check when `hosts` is given (a loopback server), CORS
/// headers for `cors_origins` (none: no cross-origin access), and an access-log line per
/// request (target `clickflow::access`: method, path, status, latency).
///
/// A server on a loopback address without a token trusts whoever can reach it, which a page
/// on another site can arrange by DNS rebinding (its own name resolving to 127.0.0.1): the
/// browser then sends that name as `Host`. Answering only to the loopback names (and those
/// allowed by `--allowed-host`) closes that door: any other `Host` gets 421 with a JSON
/// error.
pub fn serving(
    context: WebContext,
    token: Option<Arc<str>>,
    hosts: Option<Arc<[String]>>,
    cors_origins: &[String],
) -> BoxedFilter<(warp::reply::Response,)> {
    let access = warp::log::custom(|info| {
        tracing::info!(
            target: "clickflow::access",
            method = %info.method(),
            path = info.path(),
            status = info.status().as_u16(),
            latency_ms = info.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    });
    let served = warp::path::full()
        .and(
            host_allowed(hosts)
                .and(routes(context, token))
                .recover(recover)
                .unify(),
        )
        .map(|path: warp::path::FullPath, response| with_allow(path.as_str(), response));
    if cors_origins.is_empty() {
        return served.with(access).map(Reply::into_response).boxed();
    }
    let cors = warp::cors()
        .allow_origins(cors_origins.iter().map(String::as_str))
        .allow_methods(["GET", "POST"])
        .allow_headers(["authorization", "content-type", "last-event-id"])
        .max_age(Duration::from_secs(600));
    served
        .with(cors)
        .map(Reply::into_response)
        .recover(recover)
        .unify()
        .with(access)
        .map(Reply::into_response)
        .boxed()
}

/// Passes requests whose `Host` (without its port) is one of `hosts`; all with `None`.
fn host_allowed(
    hosts: Option<Arc<[String]>>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("host")
        .and_then(move |host: Option<String>| {
            let hosts = hosts.clone();
            async move {
                let Some(hosts) = hosts else {
                    return Ok(());
                };
                let name = host.as_deref().map(host_name).unwrap_or_default();
                if hosts
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(name))
                {
                    Ok(())
                } else {
                    Err(refuse(
                        StatusCode::MISDIRECTED_REQUEST,
                        format!(
                            "this server answers to {} only, not to Host {name:?}; \
                             allow another name with --allowed-host",
                            hosts.join(", ")
                        ),
                    ))
                }
            }
        })
        .untuple_one()
}

/// The name of a `Host` header: without its port, IPv6 literals in brackets.
fn host_name(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(rest) => rest
            .split(']')
            .next()
            .map_or(host, |inner| &host[..inner.len() + 2]),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    }
}

/// The names a loopback server answers to, with `extra`.
pub fn loopback_hosts(extra: &[String]) -> Arc<[String]> {
    ["localhost", "127.0.0.1", "[::1]"]
        .into_iter()
        .map(String::from)
        .chain(extra.iter().cloned())
        .collect()
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
    /// The certificate or key cannot be used.
    #[error("cannot serve HTTPS: {0}")]
    Tls(String),
    /// The token is too short to protect anything.
    #[error(
        "the API token has {0} bytes: use at least {MIN_TOKEN_BYTES} (e.g. `openssl rand -hex 16`)"
    )]
    WeakToken(usize),
}

/// The running server; stops when dropped.
pub struct WebServer {
    addr: SocketAddr,
    views: Arc<crate::views::LiveViews>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    /// Binds `config.addr` (an error, not a panic, if it is taken) and serves on a thread of
    /// its own. A non-loopback address without a token is served, with a loud warning; a
    /// loopback one answers only to the loopback host names (see [`serving`]).
    pub fn start(config: WebConfig, context: WebContext) -> Result<WebServer, WebError> {
        if let Some(token) = &config.token {
            if token.len() < MIN_TOKEN_BYTES {
                return Err(WebError::WeakToken(token.len()));
            }
        }
        if !config.addr.ip().is_loopback() && config.token.is_none() {
            tracing::warn!(
                addr = %config.addr,
                "the dashboard and API are OPEN to the network with no token: anyone who reaches \
                 this address can read the data and use the model; set --api-token"
            );
        }
        let acceptor = config
            .tls
            .as_ref()
            .map(crate::https::acceptor)
            .transpose()
            .map_err(WebError::Tls)?;
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
        let hosts = config
            .addr
            .ip()
            .is_loopback()
            .then(|| loopback_hosts(&config.allowed_hosts));
        let views = context.views.clone();
        views
            .stream()
            .set_connection_duration(config.stream_connection);
        let served = serving(context, token, hosts, &config.cors_origins);
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
                    let stopped = async {
                        let _ = stopped.await;
                    };
                    match acceptor {
                        Some(acceptor) => {
                            crate::https::serve(listener, acceptor, served, stopped).await;
                        }
                        None => {
                            warp::serve(served)
                                .incoming(listener)
                                .graceful(stopped)
                                .run()
                                .await;
                        }
                    }
                });
            })
            .map_err(WebError::Start)?;
        Ok(WebServer {
            addr,
            views,
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
        // Pushed-change streams never end on their own: end them first.
        self.views.stream().close();
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
