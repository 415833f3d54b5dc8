//! The HTTP server (`[http]`): the status page, Prometheus `/metrics` and the JSON API, served by axum on
//! the daemon's tokio runtime. It only reads [`Live`]; classify requests run on their own sessions
//! ([`classify::ClassifyPool`]).
//!
//! Routes: `/` (the page), `/metrics`, `/api/v1/status`, `/api/v1/cameras/{camera}/snapshot.jpg`,
//! `POST /api/v1/classify`, `/healthz`, `/readyz`. With a token (`token_file`), every route needs
//! `Authorization: Bearer <token>` (or HTTP Basic with the token as password, which browsers ask for);
//! anything else gets 401 and nothing more. Optional TLS (rustls) with `cert_file` and `key_file`.

pub mod classify;
pub mod conn;
pub mod metrics;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::config::HttpConfig;
use crate::live::Live;
use classify::CurrentPool;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http.token_file {}: {source}", path.display())]
    TokenFile { path: PathBuf, source: std::io::Error },
    #[error("http.token_file {}: the first line is empty; put the token there", path.display())]
    EmptyToken { path: PathBuf },
    #[error("http TLS: {0}")]
    Tls(String),
    #[error("http.listen {0:?} is not address:port")]
    Listen(String),
    #[error("http.listen: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("cannot start a classify thread: {0}")]
    Thread(std::io::Error),
}

/// `[http]` resolved: the address, the token and TLS files read.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    token: Option<Arc<str>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    pub max_body: usize,
    /// Where others reach the page (Home Assistant's `configuration_url`).
    pub url: String,
    /// Deadlines and caps on connections and bodies.
    pub limits: conn::Limits,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("tls", &self.tls.is_some())
            .field("url", &self.url)
            .finish()
    }
}

impl Settings {
    pub fn from_config(http: &HttpConfig) -> Result<Settings, HttpError> {
        // Validated with the config: an address that does not parse never reaches here.
        let listen: SocketAddr = http
            .listen
            .parse()
            .map_err(|_| HttpError::Tls(format!("http.listen {:?} is not address:port", http.listen)))?;
        let token = match &http.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| HttpError::TokenFile { path: path.clone(), source })?;
                let token = text.lines().next().unwrap_or_default().trim().to_string();
                if token.is_empty() {
                    return Err(HttpError::EmptyToken { path: path.clone() });
                }
                Some(Arc::from(token))
            }
            None => None,
        };
        let tls = match (&http.cert_file, &http.key_file) {
            (Some(cert), Some(key)) => Some(Arc::new(tls_config(cert, key)?)),
            _ => None,
        };
        Ok(Settings {
            listen,
            token,
            url: page_url(http, tls.is_some()),
            tls,
            max_body: (http.max_body_mb as usize) << 20,
            limits: conn::Limits::from_config(http),
        })
    }
}

/// The page's address: `[http] url`, else the scheme, the listen address (the hostname when it listens on
/// every address) and the port.
pub fn page_url(http: &HttpConfig, tls: bool) -> String {
    if let Some(url) = &http.url {
        return url.clone();
    }
    let scheme = if tls || http.cert_file.is_some() { "https" } else { "http" };
    match http.listen.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => {
            format!("{scheme}://{}:{}/", gethostname::gethostname().to_string_lossy(), addr.port())
        }
        Ok(addr) => format!("{scheme}://{addr}/"),
        Err(_) => format!("{scheme}://{}/", http.listen),
    }
}

fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<rustls::ServerConfig, HttpError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| HttpError::Tls(format!("{}: {e}", p.display())));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| HttpError::Tls(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(HttpError::Tls(format!("{}: no PEM certificate in it", cert.display())));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| HttpError::Tls(format!("{}: no usable private key: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| HttpError::Tls(format!("{} and {}: {e}", cert.display(), key.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What every handler reads.
#[derive(Debug, Clone)]
pub struct AppState {
    live: Arc<Live>,
    latest: Arc<status::Latest>,
    registry: Arc<prometheus_client::registry::Registry>,
    classify: Arc<CurrentPool>,
    token: Option<Arc<str>>,
    max_body: usize,
    body_timeout: Duration,
    bodies: Arc<conn::BodyBudget>,
}

/// The router: every route, the token check and the body limit.
pub fn router(settings: &Settings, live: Arc<Live>, classify: Arc<CurrentPool>) -> (Router, Arc<status::Latest>) {
    let latest = Arc::new(status::Latest::default());
    let state = AppState {
        registry: Arc::new(metrics::registry(Arc::clone(&live))),
        live,
        latest: Arc::clone(&latest),
        classify,
        token: settings.token.clone(),
        max_body: settings.max_body,
        body_timeout: settings.limits.body_timeout,
        bodies: Arc::new(conn::BodyBudget::new(settings.limits.body_budget)),
    };
    let router = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status_json))
        .route("/api/v1/cameras/{camera}/snapshot.jpg", get(snapshot))
        .route("/api/v1/classify", post(classify_request))
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    (router, latest)
}

/// The running server.
#[derive(Debug)]
pub struct Server {
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// Binds `settings.listen` and serves until [`Server::stop`]; classify requests go to the pool in
    /// `classify` at the time (a reload replaces it).
    pub async fn start(settings: &Settings, live: Arc<Live>, classify: Arc<CurrentPool>) -> Result<Server, HttpError> {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| HttpError::Bind { addr: settings.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| HttpError::Bind { addr: settings.listen, source })?;
        let (router, latest) = router(settings, Arc::clone(&live), classify);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let sampler = tokio::spawn(status::sample(live, latest));
        let (tls, limits) = (settings.tls.clone(), settings.limits);
        let task = tokio::spawn(async move {
            conn::serve(listener, tls, router, limits, stopped).await;
            sampler.abort();
        });
        let scheme = if settings.tls.is_some() { "https" } else { "http" };
        tracing::info!("HTTP server on {scheme}://{local_addr}/ (page {})", settings.url);
        Ok(Server { local_addr, task, stop })
    }

    /// Stops accepting, lets requests in progress finish (for at most 2 s).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// A body announced larger than `[http] max_body_mb` gets 413 before it is read (a body without a length
/// is cut at the limit where it is read, with the same answer).
async fn limit_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let length = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|n| n > state.max_body as u64) {
        let text = format!("the body is over {} MiB\n", state.max_body >> 20);
        return refuse(request.into_body(), state.max_body, StatusCode::PAYLOAD_TOO_LARGE, text).await;
    }
    next.run(request).await
}

/// With a token: `Authorization: Bearer <token>`, or Basic with the token as the password; else 401.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else { return next.run(request).await };
    let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(presented);
    if given.as_deref().is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    let text = "401 Unauthorized: this camclassd needs its token\n".to_string();
    let mut response = refuse(request.into_body(), state.max_body, StatusCode::UNAUTHORIZED, text).await;
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"camclassd\", charset=\"UTF-8\""));
    response
}

/// A refusal of a request whose body was not read (or not all of it). The rest of the body is read and
/// thrown away first (at most twice the body limit, for at most 10 s: what nginx calls a lingering close),
/// so that the client, still sending, gets the answer instead of a broken connection, and the connection
/// stays usable; a body beyond that ends the connection after the answer.
///
/// A client that waits for `100 Continue` before it sends the body gets the answer without it (reading the
/// body would make hyper send it) and the connection closes.
async fn refuse(body: Body, max_body: usize, code: StatusCode, text: String) -> Response {
    use http_body_util::BodyExt;
    if conn::expects_continue() {
        return (code, [(header::CONNECTION, "close")], text).into_response();
    }
    let drain = async {
        let mut body = body;
        let mut left = 2 * max_body;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            let n = frame.data_ref().map_or(0, |d| d.len());
            if n > left {
                return false;
            }
            left -= n;
        }
        true
    };
    let drained = tokio::time::timeout(Duration::from_secs(10), drain).await.unwrap_or(false);
    if drained { (code, text).into_response() } else { (code, [(header::CONNECTION, "close")], text).into_response() }
}

/// The token an `Authorization` header presents: a Bearer token, or a Basic password.
fn presented(header: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, value) = header.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, password)| password.to_string());
    }
    None
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The status page: one self-contained file (HTML, CSS and script), nothing fetched from elsewhere.
const PAGE: &str = include_str!("page.html");

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' blob:",
            ),
        ],
        PAGE,
    )
        .into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    match metrics::encode(&state.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n").into_response(),
    }
}

async fn status_json(State(state): State<AppState>) -> Response {
    match status::status(&state.live, &state.latest) {
        Some(s) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(s)).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], "starting\n").into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let why = status::not_ready(&state.live);
    if why.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", why.join("; "))).into_response()
    }
}

async fn snapshot(State(state): State<AppState>, Path(camera): Path<String>) -> Response {
    let Some(pipeline) = state.live.pipeline() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    let Some((index, _)) = pipeline.camera(&camera) else {
        return (StatusCode::NOT_FOUND, "no such camera\n").into_response();
    };
    let jpeg = tokio::task::spawn_blocking(move || status::snapshot_jpeg(&pipeline, index)).await;
    match jpeg {
        Ok(Some(Ok(bytes))) => {
            ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], bytes).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, [(header::RETRY_AFTER, "1")], "no frame yet\n").into_response(),
        Ok(Some(Err(e))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the frame: {e}\n")).into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the encoder failed\n").into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct ClassifyQuery {
    model: Option<String>,
    top: Option<usize>,
    /// `x,y,width,height` in the picture's pixels.
    crop: Option<String>,
}

fn plain(code: StatusCode, text: String) -> Response {
    (code, text).into_response()
}

async fn classify_request(State(state): State<AppState>, Query(q): Query<ClassifyQuery>, body: Body) -> Response {
    let Some(pool) = state.classify.get() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "classification over HTTP is off\n".into());
    };
    // The model by its own name, or by the config's name for `[model]`.
    if let Some(model) = q.model.as_deref().filter(|m| *m != pool.model && *m != crate::config::DEFAULT_MODEL) {
        let text = format!("no model {model:?}; classify requests run {:?} (or say \"default\")\n", pool.model);
        return plain(StatusCode::NOT_FOUND, text);
    }
    let top = q.top.unwrap_or(pool.default_top);
    if !(1..=classify::MAX_TOP).contains(&top) {
        return plain(StatusCode::BAD_REQUEST, format!("top must be 1 to {}\n", classify::MAX_TOP));
    }
    let crop = match q.crop.as_deref().map(parse_crop).transpose() {
        Ok(c) => c,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    // Refused before the body is read while every slot is taken: a busy daemon spends nothing on the requests
    // it turns away (and sends no `100 Continue` for them). The slot itself is taken once the body is in, so
    // that slow uploads hold none.
    if !pool.has_room() {
        return busy(body, state.max_body).await;
    }
    let (bytes, _held) = match conn::read_body(body, state.max_body, state.body_timeout, &state.bodies).await {
        Ok(b) => b,
        // The rest of the body may still be coming: the connection cannot be kept.
        Err(conn::BodyError::TooLarge) => {
            let text = format!("the body is over {} MiB\n", state.max_body >> 20);
            return (StatusCode::PAYLOAD_TOO_LARGE, [(header::CONNECTION, "close")], text).into_response();
        }
        Err(conn::BodyError::TimedOut) => {
            let text = format!("the body did not arrive within {} s\n", state.body_timeout.as_secs());
            return (StatusCode::REQUEST_TIMEOUT, [(header::CONNECTION, "close")], text).into_response();
        }
        Err(conn::BodyError::Broken) => {
            let text = "the body was cut or badly framed\n".to_string();
            return (StatusCode::BAD_REQUEST, [(header::CONNECTION, "close")], text).into_response();
        }
    };
    let Some(permit) = pool.admit() else { return busy(Body::empty(), state.max_body).await };
    if bytes.is_empty() {
        return plain(StatusCode::BAD_REQUEST, "send a JPEG or PNG picture as the body\n".into());
    }
    match pool.classify(permit, bytes, top, crop).await {
        Ok(Ok(report)) => axum::Json(report).into_response(),
        Ok(Err(e)) => plain(StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")),
        Err(classify::Gone) => plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
    }
}

async fn busy(body: Body, max_body: usize) -> Response {
    let text = "busy: every classify worker is taken and the queue is full; retry after a second\n".to_string();
    let mut response = refuse(body, max_body, StatusCode::TOO_MANY_REQUESTS, text).await;
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn parse_crop(text: &str) -> Result<[u32; 4], String> {
    let parts: Vec<Option<u32>> = text.split(',').map(|p| p.trim().parse().ok()).collect();
    match parts[..] {
        [Some(x), Some(y), Some(w), Some(h)] if w > 0 && h > 0 => Ok([x, y, w, h]),
        _ => Err(format!("crop {text:?} must be x,y,width,height in pixels, width and height positive\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_from_bearer_and_basic() {
        assert_eq!(presented("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(presented("bearer  abc ").as_deref(), Some("abc"));
        // "user:abc"
        assert_eq!(presented("Basic dXNlcjphYmM=").as_deref(), Some("abc"));
        assert_eq!(presented("Digest x"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn crops_are_four_numbers() {
        assert_eq!(parse_crop("1,2,3,4"), Ok([1, 2, 3, 4]));
        assert!(parse_crop("1,2,0,4").is_err());
        assert!(parse_crop("1,2,3").is_err());
        assert!(parse_crop("a,2,3,4").is_err());
    }

    #[test]
    fn the_page_url_follows_listen_and_tls() {
        let mut http = HttpConfig { listen: "127.0.0.1:8080".into(), ..HttpConfig::default() };
        assert_eq!(page_url(&http, false), "http://127.0.0.1:8080/");
        assert_eq!(page_url(&http, true), "https://127.0.0.1:8080/");
        http.url = Some("https://cam.example/".into());
        assert_eq!(page_url(&http, false), "https://cam.example/");
    }
}
