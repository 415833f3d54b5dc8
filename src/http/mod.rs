//! The HTTP server (`[http]`): the status page, Prometheus `/metrics` and the JSON API, served by axum on
//! the daemon's tokio runtime. It only reads [`Live`]; classify requests run on their own sessions
//! ([`classify::ClassifyPool`]).
//!
//! Routes: `/` (the page), `/metrics`, `/api/v1/status`, `/api/v1/cameras/{camera}/snapshot.jpg`,
//! `POST /api/v1/classify`, `/healthz`, `/readyz`. With a token (`token_file`), every route needs
//! `Authorization: Bearer <token>` (or HTTP Basic with the token as password, which browsers ask for);
//! anything else gets 401 and nothing more. The token is read again at each reload (a rotated token takes
//! effect without a restart). Without a token the server listens on loopback only, and it answers only
//! requests whose `Host` is a loopback name or `url`'s host (a page of another site that rebinds its DNS name
//! to 127.0.0.1 gets 421). Every answer forbids framing and MIME sniffing, and `POST /api/v1/classify` wants
//! a picture type (or a Bearer header), which a page of another origin cannot send without asking first.
//! Optional TLS (rustls) with `cert_file` and `key_file`.

pub mod classify;
pub mod conn;
pub mod metrics;
pub mod status;
pub mod teach;

use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, RwLock};
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
pub use teach::Teach;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http.token_file {}: {source}", path.display())]
    TokenFile { path: PathBuf, source: std::io::Error },
    #[error("http.token_file {}: the first line is empty; put the token there", path.display())]
    EmptyToken { path: PathBuf },
    #[error(
        "http.token_file {}: the token is {len} characters; use at least {min} (`openssl rand -hex 32` makes one)",
        path.display(),
        min = MIN_TOKEN_LEN
    )]
    ShortToken { path: PathBuf, len: usize },
    #[error(
        "http.token_file {}: the token must be printable ASCII without spaces (a Bearer header carries nothing \
         else); `openssl rand -hex 32` makes one",
        path.display()
    )]
    TokenCharacters { path: PathBuf },
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

/// The shortest token `token_file` may hold: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token of `token_file`'s first line (surrounding blanks trimmed): at least [`MIN_TOKEN_LEN`] printable
/// ASCII characters, all that an `Authorization: Bearer` header can carry.
pub fn read_token(path: &FsPath) -> Result<Arc<str>, HttpError> {
    let text = std::fs::read_to_string(path).map_err(|source| HttpError::TokenFile { path: path.into(), source })?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(HttpError::EmptyToken { path: path.into() });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HttpError::TokenCharacters { path: path.into() });
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(HttpError::ShortToken { path: path.into(), len: token.len() });
    }
    Ok(Arc::from(token))
}

/// The token every request must carry, shared by the server and the reload that re-reads its file.
pub struct Token {
    path: PathBuf,
    current: RwLock<Arc<str>>,
}

/// The file, never the token: a `{:?}` of the server's state must not print it.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("path", &self.path).field("current", &"…").finish()
    }
}

impl Token {
    fn get(&self) -> Arc<str> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the file again; `true` when the token changed. A file that cannot be read or holds no usable
    /// token leaves the running token as it is.
    fn reread(&self) -> Result<bool, HttpError> {
        let token = read_token(&self.path)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let changed = *current != token;
        *current = token;
        Ok(changed)
    }
}

/// `[http]` resolved: the address, the token and TLS files read.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    token: Option<Arc<Token>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    pub max_body: usize,
    /// Where others reach the page (Home Assistant's `configuration_url`).
    pub url: String,
    /// `url` is the config's (not made from `listen`).
    url_given: bool,
    /// The host of the config's `url`, lower case: a name the server answers without a token.
    url_host: Option<Arc<str>>,
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
            Some(path) => Some(Arc::new(Token { path: path.clone(), current: RwLock::new(read_token(path)?) })),
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
            url_given: http.url.is_some(),
            url_host: http.url.as_deref().and_then(url_host).map(Arc::from),
            tls,
            max_body: (http.max_body_mb as usize) << 20,
            limits: conn::Limits::from_config(http),
        })
    }

    /// The address the server was bound to: with `listen` on port 0, the page's URL (made from `listen`)
    /// gets the port the system chose, so that Home Assistant's link and the log lead to the page.
    pub fn bound(&mut self, local: SocketAddr) {
        if self.listen.port() == 0 {
            self.listen.set_port(local.port());
            if !self.url_given {
                self.url = url_of(if self.tls.is_some() { "https" } else { "http" }, self.listen);
            }
        }
    }

    /// Reads `token_file` again (at a config reload): a rotated token takes effect now; a file that cannot be
    /// read or holds no usable token keeps the running token, and the log says why.
    pub fn reread_token(&self) {
        let Some(token) = &self.token else { return };
        match token.reread() {
            Ok(true) => tracing::info!(
                "http.token_file {}: the new token is in force (the old one is refused from now on)",
                token.path.display()
            ),
            Ok(false) => tracing::debug!("http.token_file {}: the token is unchanged", token.path.display()),
            Err(e) => tracing::warn!("{e}; the running token stays"),
        }
    }
}

/// The host of a URL (`scheme://[user@]host[:port]/…`), lower case.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host_name(host_port);
    (!host.is_empty()).then_some(host)
}

/// The name or address of a `Host` value without its port, lower case, without a final dot (IPv6 addresses
/// keep their brackets).
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a server without a token answers a request for `host`: `localhost`, a loopback address (127.x,
/// `[::1]`), or the host of `[http] url`, each with or without a port.
fn host_allowed(host: &str, url_host: Option<&str>) -> bool {
    let name = host_name(host);
    if name == "localhost" || url_host.is_some_and(|u| u == name) {
        return true;
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|a| a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()));
    }
    name.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

/// The page's address: `[http] url`, else the scheme, the listen address (the hostname when it listens on
/// every address) and the port.
pub fn page_url(http: &HttpConfig, tls: bool) -> String {
    if let Some(url) = &http.url {
        return url.clone();
    }
    let scheme = if tls || http.cert_file.is_some() { "https" } else { "http" };
    match http.listen.parse::<SocketAddr>() {
        Ok(addr) => url_of(scheme, addr),
        Err(_) => format!("{scheme}://{}/", http.listen),
    }
}

/// The page's address on `addr` (the hostname when it is every address).
fn url_of(scheme: &str, addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("{scheme}://{}:{}/", gethostname::gethostname().to_string_lossy(), addr.port())
    } else {
        format!("{scheme}://{addr}/")
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
    token: Option<Arc<Token>>,
    /// Without a token: the host of `[http] url`, answered besides the loopback names.
    url_host: Option<Arc<str>>,
    snapshots: Arc<status::Snapshots>,
    max_body: usize,
    body_timeout: Duration,
    bodies: Arc<conn::BodyBudget>,
    /// The taught models (`None`: a server without a daemon behind it).
    teach: Option<Teach>,
}

/// The router: every route, the token (or `Host`) check, the body limit and the headers every answer carries.
pub fn router(
    settings: &Settings,
    live: Arc<Live>,
    classify: Arc<CurrentPool>,
    teach: Option<Teach>,
) -> (Router, Arc<status::Latest>) {
    let latest = Arc::new(status::Latest::default());
    let state = AppState {
        registry: Arc::new(metrics::registry(Arc::clone(&live))),
        live,
        latest: Arc::clone(&latest),
        classify,
        token: settings.token.clone(),
        url_host: settings.url_host.clone(),
        snapshots: Arc::default(),
        max_body: settings.max_body,
        body_timeout: settings.limits.body_timeout,
        bodies: Arc::new(conn::BodyBudget::new(settings.limits.body_budget)),
        teach,
    };
    let json_only = || middleware::from_fn_with_state(state.clone(), json_type);
    let router = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status_json))
        .route("/api/v1/cameras/{camera}/snapshot.jpg", get(snapshot))
        .route(
            "/api/v1/classify",
            post(classify_request).route_layer(middleware::from_fn_with_state(state.clone(), picture_type)),
        )
        .route("/api/v1/teach", get(teach::models))
        .route("/api/v1/teach/{model}", get(teach::model))
        .route("/api/v1/teach/{model}/samples/{file}", get(teach::sample))
        .route("/api/v1/teach/{model}/label", post(teach::label).route_layer(json_only()))
        .route("/api/v1/teach/{model}/delete", post(teach::delete).route_layer(json_only()))
        .route("/api/v1/teach/{model}/train", post(teach::train).route_layer(json_only()))
        .route("/api/v1/teach/{model}/use", post(teach::use_model).route_layer(json_only()))
        .route("/api/v1/teach/{model}/rollback", post(teach::rollback).route_layer(json_only()))
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn(protect))
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
    pub async fn start(
        settings: &Settings,
        live: Arc<Live>,
        classify: Arc<CurrentPool>,
        teach: Teach,
    ) -> Result<Server, HttpError> {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| HttpError::Bind { addr: settings.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| HttpError::Bind { addr: settings.listen, source })?;
        let (router, latest) = router(settings, Arc::clone(&live), classify, Some(teach));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let sampler = tokio::spawn(status::sample(live, latest));
        let (tls, limits) = (settings.tls.clone(), settings.limits);
        let task = tokio::spawn(async move {
            conn::serve(listener, tls, router, limits, stopped).await;
            sampler.abort();
        });
        let scheme = if settings.tls.is_some() { "https" } else { "http" };
        // With `listen = "…:0"` the page's address has the port just bound.
        let mut bound = settings.clone();
        bound.bound(local_addr);
        tracing::info!("HTTP server on {scheme}://{local_addr}/ (page {})", bound.url);
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
/// Without one (loopback only): a `Host` that names this server, else 421 — a page of another site whose
/// name was rebound to 127.0.0.1 must not read the cameras.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        let host = match request.headers().get(header::HOST) {
            Some(h) => h.to_str().ok().map(str::to_string),
            // HTTP/1.0 without Host (no browser sends that), or the address in the request line.
            None => Some(request.uri().authority().map(|a| a.to_string()).unwrap_or_else(|| "localhost".into())),
        };
        if host.as_deref().is_some_and(|h| host_allowed(h, state.url_host.as_deref())) {
            return next.run(request).await;
        }
        let text = format!(
            "421 Misdirected Request: Host {:?} is not a name of this camclassd. Without http.token_file it \
             answers only localhost, 127.0.0.1, [::1] and the host of http.url: set http.url to the address you \
             use, or set http.token_file\n",
            host.unwrap_or_default()
        );
        return refuse(request.into_body(), state.max_body, StatusCode::MISDIRECTED_REQUEST, text).await;
    };
    let token = token.get();
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
    // While the body drains, the connection counts as idle at the cap: a flood of refused requests whose
    // bodies come a byte a second cannot hold every connection slot.
    let _refusing = conn::refusing();
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

/// What every answer carries: no other site may frame the page (clickjacking), and no browser may guess a
/// type other than the one sent.
async fn protect(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none'"));
    }
    response
}

/// `POST /api/v1/classify` takes a picture type (`image/*`, or `application/octet-stream`). A page of another
/// origin can POST `text/plain`, the form types or no type at all without the browser asking the server
/// first (a CORS "simple" request), so those are refused before any work — unless an `Authorization: Bearer`
/// header comes with them, which such a page cannot add without asking either (`curl --data-binary` sends a
/// form type).
async fn picture_type(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (bearer, kind, essence) = body_type(request.headers());
    if bearer || essence.starts_with("image/") || essence == "application/octet-stream" {
        return next.run(request).await;
    }
    let text = format!(
        "415 Unsupported Media Type: send the picture as Content-Type: image/jpeg or image/png, not {:?} \
         (curl: -H 'Content-Type: image/jpeg')\n",
        if kind.is_empty() { "none" } else { kind.as_str() }
    );
    refuse(request.into_body(), state.max_body, StatusCode::UNSUPPORTED_MEDIA_TYPE, text).await
}

/// The Teach view's POSTs take `application/json` (or come with a Bearer header): a page of another origin
/// cannot send that type without asking first (see [`picture_type`]).
async fn json_type(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (bearer, kind, essence) = body_type(request.headers());
    if bearer || essence == "application/json" {
        return next.run(request).await;
    }
    let text = format!(
        "415 Unsupported Media Type: send a JSON body with Content-Type: application/json, not {:?}\n",
        if kind.is_empty() { "none" } else { kind.as_str() }
    );
    refuse(request.into_body(), state.max_body, StatusCode::UNSUPPORTED_MEDIA_TYPE, text).await
}

/// What a POST says of its body: whether it comes with an `Authorization: Bearer` header, its
/// `Content-Type` as sent (`""` when none) and that type's essence (lower case, no parameters).
fn body_type(headers: &axum::http::HeaderMap) -> (bool, String, String) {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
    let kind = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let essence = kind.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    (bearer, kind, essence)
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
                "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' blob:; \
                 frame-ancestors 'none'",
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

/// A camera's newest frame as JPEG. Encodes (of raw and PNG frames) run one at a time per camera, and the
/// JPEG is kept for its frame: a burst of requests costs one encode per new frame, not one per request (200
/// at once took 800 MiB and most of the cameras' CPU).
async fn snapshot(State(state): State<AppState>, Path(camera): Path<String>) -> Response {
    let Some(pipeline) = state.live.pipeline() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    let Some((index, _)) = pipeline.camera(&camera) else {
        return (StatusCode::NOT_FOUND, "no such camera\n").into_response();
    };
    // The waiters queue here; the holder keeps the slot until its encode is stored, even when its client
    // went away, so that abandoned requests never add encodes.
    let mut kept = state.snapshots.slot(&pipeline, index).lock_owned().await;
    let number = status::frame_number(&pipeline, index);
    let fresh = kept.as_ref().filter(|s| s.number == number).map(|s| s.jpeg.clone());
    let jpeg = match fresh {
        Some(jpeg) => Ok(Some(Ok(jpeg))),
        None => {
            tokio::task::spawn_blocking(move || {
                let made = status::snapshot_jpeg(&pipeline, index)?;
                Some(made.map(|s| {
                    let jpeg = s.jpeg.clone();
                    *kept = Some(s);
                    jpeg
                }))
            })
            .await
        }
    };
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

    #[test]
    fn a_page_url_made_from_port_0_gets_the_bound_port() {
        let http = HttpConfig { listen: "127.0.0.1:0".into(), ..HttpConfig::default() };
        let mut settings = Settings::from_config(&http).expect("settings");
        settings.bound("127.0.0.1:43210".parse().expect("address"));
        assert_eq!(settings.url, "http://127.0.0.1:43210/");
        // The config's url stays as written.
        let http = HttpConfig { url: Some("http://cam.example:8080/".into()), ..http };
        let mut settings = Settings::from_config(&http).expect("settings");
        settings.bound("127.0.0.1:43210".parse().expect("address"));
        assert_eq!(settings.url, "http://cam.example:8080/");
    }

    #[test]
    fn without_a_token_loopback_names_and_the_url_host_are_answered() {
        for host in ["localhost", "LOCALHOST:8080", "localhost.", "127.0.0.1", "127.0.0.1:8080", "127.9.8.7:1"] {
            assert!(host_allowed(host, None), "{host}");
        }
        for host in ["[::1]", "[::1]:8080", "[0:0:0:0:0:0:0:1]:80", "[::ffff:127.0.0.1]:80"] {
            assert!(host_allowed(host, None), "{host}");
        }
        for host in ["attacker.example", "attacker.example:8080", "localhost.attacker.example", "127.0.0.1.nip.io"] {
            assert!(!host_allowed(host, None), "{host}");
        }
        for host in ["10.0.0.1", "[::2]", "0.0.0.0", "", "[::1", "127.0.0.1:8080:1"] {
            assert!(!host_allowed(host, None), "{host}");
        }
        let url = url_host("https://user@Cam.Example.:8443/page?x").expect("host");
        assert_eq!(url, "cam.example");
        assert!(host_allowed("cam.example", Some(&url)) && host_allowed("CAM.example:8443", Some(&url)));
        assert!(!host_allowed("other.example", Some(&url)));
        assert_eq!(url_host("http://[fd00::1]:8080/").as_deref(), Some("[fd00::1]"));
    }

    #[test]
    fn tokens_are_long_printable_ascii() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        let read = |text: &str| {
            std::fs::write(&file, text).expect("token");
            read_token(&file)
        };
        assert_eq!(read("  0123456789abcdef  \nsecond line\n").expect("token").as_ref(), "0123456789abcdef");
        assert!(matches!(read("\n"), Err(HttpError::EmptyToken { .. })));
        assert!(matches!(read("0123456789abcde\n"), Err(HttpError::ShortToken { len: 15, .. })));
        assert!(matches!(read("pässwörd-pässwörd-pässwörd"), Err(HttpError::TokenCharacters { .. })));
        assert!(matches!(read("with a space inside it"), Err(HttpError::TokenCharacters { .. })));
        let e = read("x").expect_err("short").to_string();
        assert!(e.contains("http.token_file") && e.contains(&file.display().to_string()) && e.contains("16"), "{e}");
    }

    #[test]
    fn a_reread_token_replaces_the_running_one_unless_the_file_went_bad() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "first-token-0123456789").expect("token");
        let http = HttpConfig { token_file: Some(file.clone()), ..HttpConfig::default() };
        let settings = Settings::from_config(&http).expect("settings");
        let token = settings.token.clone().expect("a token");
        std::fs::write(&file, "second-token-0123456789").expect("token");
        settings.reread_token();
        assert_eq!(token.get().as_ref(), "second-token-0123456789");
        std::fs::write(&file, "short").expect("token");
        settings.reread_token();
        assert_eq!(token.get().as_ref(), "second-token-0123456789");
        std::fs::remove_file(&file).expect("remove");
        settings.reread_token();
        assert_eq!(token.get().as_ref(), "second-token-0123456789");
    }
}
