//! The Teach view's JSON routes, under the server's authentication:
//!
//! - `GET /api/v1/teach`: the taught models (`{"models": [{"name", "classes"}]}`);
//! - `GET /api/v1/teach/{model}`: its samples, counts, training (with its report), candidate, model in
//!   service and previous model ([`crate::teach::teacher::Teacher::state`]);
//! - `GET /api/v1/teach/{model}/samples/{id}.jpg`: a sample's picture;
//! - `POST /api/v1/teach/{model}/label` `{"ids": [...], "class": "open"}` (`null`: back to unlabelled,
//!   a deleted sample restored), `…/delete` `{"ids": [...]}`, `…/train`, `…/use`, `…/rollback`.
//!
//! The POSTs want `Content-Type: application/json` (or a Bearer header): a page of another origin cannot
//! send that without asking first, and this server never answers such a question.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, conn, plain};
use crate::teach::samples::valid_id;
use crate::teach::teacher::{SwapKind, SwapRequest, Teacher};

/// What the routes need of the daemon: the taught models, and the way to ask it for a swap.
#[derive(Debug, Clone)]
pub struct Teach {
    pub teachers: std::sync::Arc<crate::teach::teacher::Teachers>,
    pub swaps: tokio::sync::mpsc::Sender<SwapRequest>,
}

fn teacher(state: &AppState, model: &str) -> Option<std::sync::Arc<Teacher>> {
    state.teach.as_ref().and_then(|t| t.teachers.get(model))
}

fn not_taught(model: &str) -> Response {
    plain(StatusCode::NOT_FOUND, format!("no taught model {model:?} ([[models]] with teach = [...])\n"))
}

pub(super) async fn models(State(state): State<AppState>) -> Response {
    let models: Vec<_> = state
        .teach
        .as_ref()
        .map(|t| t.teachers.list())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, classes)| json!({ "name": name, "classes": classes }))
        .collect();
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(json!({ "models": models }))).into_response()
}

pub(super) async fn model(State(state): State<AppState>, Path(model): Path<String>) -> Response {
    let Some(teacher) = teacher(&state, &model) else { return not_taught(&model) };
    match tokio::task::spawn_blocking(move || teacher.state()).await {
        Ok(v) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(v)).into_response(),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "the state could not be read\n".into()),
    }
}

pub(super) async fn sample(State(state): State<AppState>, Path((model, file)): Path<(String, String)>) -> Response {
    let Some(teacher) = teacher(&state, &model) else { return not_taught(&model) };
    let Some(id) = file.strip_suffix(".jpg").filter(|id| valid_id(id)).map(str::to_string) else {
        return plain(StatusCode::NOT_FOUND, "no such sample\n".into());
    };
    let read = tokio::task::spawn_blocking(move || teacher.samples.path_of(&id).and_then(|p| std::fs::read(p).ok()));
    match read.await {
        Ok(Some(bytes)) => {
            ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=3600")], bytes)
                .into_response()
        }
        _ => plain(StatusCode::NOT_FOUND, "no such sample\n".into()),
    }
}

/// A POST's JSON body, read within the server's limits.
async fn json_body<T: for<'de> Deserialize<'de>>(state: &AppState, body: Body) -> Result<T, Response> {
    let (bytes, _held) = match conn::read_body(body, state.max_body, state.body_timeout, &state.bodies).await {
        Ok(b) => b,
        Err(_) => {
            let text = "the body did not arrive whole, in time and under the size limit\n".to_string();
            return Err((StatusCode::BAD_REQUEST, [(header::CONNECTION, "close")], text).into_response());
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| plain(StatusCode::BAD_REQUEST, format!("the JSON body: {e}\n")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Label {
    ids: Vec<String>,
    class: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ids {
    ids: Vec<String>,
}

/// The most ids one request moves.
const MAX_IDS: usize = 10_000;

pub(super) async fn label(State(state): State<AppState>, Path(model): Path<String>, body: Body) -> Response {
    let Some(teacher) = teacher(&state, &model) else { return not_taught(&model) };
    let request: Label = match json_body(&state, body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if request.ids.len() > MAX_IDS {
        return plain(StatusCode::BAD_REQUEST, format!("at most {MAX_IDS} ids a request\n"));
    }
    let moved = tokio::task::spawn_blocking(move || teacher.samples.label(&request.ids, request.class.as_deref()));
    match moved.await {
        Ok(Ok(n)) => axum::Json(json!({ "moved": n })).into_response(),
        Ok(Err(e @ crate::teach::samples::SampleError::Class(..))) => plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
        Ok(Err(e)) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "labelling failed\n".into()),
    }
}

pub(super) async fn delete(State(state): State<AppState>, Path(model): Path<String>, body: Body) -> Response {
    let Some(teacher) = teacher(&state, &model) else { return not_taught(&model) };
    let request: Ids = match json_body(&state, body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if request.ids.len() > MAX_IDS {
        return plain(StatusCode::BAD_REQUEST, format!("at most {MAX_IDS} ids a request\n"));
    }
    match tokio::task::spawn_blocking(move || teacher.samples.delete(&request.ids)).await {
        Ok(Ok(n)) => axum::Json(json!({ "deleted": n })).into_response(),
        Ok(Err(e)) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "deleting failed\n".into()),
    }
}

pub(super) async fn train(State(state): State<AppState>, Path(model): Path<String>, body: Body) -> Response {
    let Some(teacher) = teacher(&state, &model) else { return not_taught(&model) };
    if let Err(r) = json_body::<serde_json::Value>(&state, body).await {
        return r;
    }
    match teacher.train() {
        Ok(()) => (StatusCode::ACCEPTED, axum::Json(json!({ "started": true }))).into_response(),
        Err(e) => plain(StatusCode::CONFLICT, format!("{e}\n")),
    }
}

async fn swap(state: AppState, model: String, kind: SwapKind, body: Body) -> Response {
    let Some(teacher) = teacher(&state, &model) else { return not_taught(&model) };
    if let Err(r) = json_body::<serde_json::Value>(&state, body).await {
        return r;
    }
    if let Err(e) = teacher.ready(kind) {
        return plain(StatusCode::CONFLICT, format!("{e}\n"));
    }
    let Some(teach) = state.teach.as_ref() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "teaching is off\n".into());
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if teach.swaps.send(SwapRequest { model, kind, reply }).await.is_err() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match answer.await {
        Ok(Ok(())) => match tokio::task::spawn_blocking(move || teacher.state()).await {
            Ok(v) => axum::Json(json!({ "in_service": v["in_service"] })).into_response(),
            Err(_) => axum::Json(json!({ "in_service": null })).into_response(),
        },
        Ok(Err(why)) => plain(StatusCode::UNPROCESSABLE_ENTITY, format!("{why}\n")),
        Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
    }
}

pub(super) async fn use_model(State(state): State<AppState>, Path(model): Path<String>, body: Body) -> Response {
    swap(state, model, SwapKind::Use, body).await
}

pub(super) async fn rollback(State(state): State<AppState>, Path(model): Path<String>, body: Body) -> Response {
    swap(state, model, SwapKind::Rollback, body).await
}
