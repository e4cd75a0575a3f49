//! The routes: the page and its assets, and the JSON API it uses
//! (docs/serve.md). Every failure is a JSON `{"error": "..."}` with a 4xx or
//! 5xx status; no input makes a handler panic.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::json;

use super::outcomes::{OutcomeProblem, RunOutcomes, image_png};
use super::request::digit_from_body;
use super::runs::RunIdProblem;
use super::{AppState, argmax};

/// The largest request body accepted: a phone photo fits.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// A body over the limit is still read (and thrown away) up to this size,
/// so the client, still sending, gets the 413 instead of a broken
/// connection; a larger one is cut off.
const DRAIN_LIMIT: usize = 16 * BODY_LIMIT;

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

/// The server's routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/healthz", get(healthz))
        .route("/api/model", get(model))
        .route("/api/predict", post(predict))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/confusion/{truth}/{predicted}", get(pair))
        .route("/api/runs/{id}/images/{index}", get(test_image))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page or API route") })
        // Only /api/predict takes a body, and reads it with its own limit.
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A failed request: its status and what to say.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<RunIdProblem> for ApiError {
    fn from(problem: RunIdProblem) -> Self {
        let status = match problem {
            RunIdProblem::Invalid(_) => StatusCode::BAD_REQUEST,
            RunIdProblem::NotFound(_) | RunIdProblem::Outside(_) => StatusCode::NOT_FOUND,
        };
        Self::new(status, problem.to_string())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

async fn healthz(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "model": state.model.is_some(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// What the drawing page classifies with.
#[derive(Serialize)]
struct ModelInfo {
    loaded: bool,
    members: Vec<String>,
    dataset: Option<String>,
    class_names: Vec<String>,
    how_to_train: &'static str,
}

async fn model(State(state): State<Arc<AppState>>) -> Json<ModelInfo> {
    let how_to_train = "cargo xtask train (about a minute on a laptop), then restart mnist serve; \
                        or pass --weights FILE";
    Json(match &state.model {
        Some(loaded) => ModelInfo {
            loaded: true,
            members: loaded
                .weights
                .iter()
                .map(|w| w.display().to_string())
                .collect(),
            dataset: Some(loaded.dataset.to_string()),
            class_names: loaded
                .dataset
                .class_names()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            how_to_train,
        },
        None => ModelInfo {
            loaded: false,
            members: Vec::new(),
            dataset: None,
            class_names: Vec::new(),
            how_to_train,
        },
    })
}

/// `POST /api/predict`'s answer.
#[derive(Serialize)]
struct Prediction {
    prediction: usize,
    label: String,
    probabilities: Vec<f32>,
    members: Vec<Member>,
    /// The 28×28 grey levels the model saw, row by row.
    input: Vec<u8>,
    /// Time spent in the server, decoding included.
    server_ms: f64,
}

#[derive(Serialize)]
struct Member {
    weights: String,
    prediction: usize,
    probabilities: Vec<f32>,
}

/// The request body, at most [`BODY_LIMIT`] bytes; 413 for more.
async fn read_limited(headers: &HeaderMap, mut body: Body) -> ApiResult<Vec<u8>> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is over the {} MB limit",
                BODY_LIMIT / (1024 * 1024)
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total <= BODY_LIMIT {
            bytes.extend_from_slice(&data);
        } else if total > DRAIN_LIMIT {
            break;
        }
    }
    if total > BODY_LIMIT {
        return Err(too_large());
    }
    Ok(bytes)
}

async fn predict(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let started = Instant::now();
    let body = read_limited(&headers, body).await?;
    let Some(loaded) = &state.model else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no model is loaded: train one with `cargo xtask train`, or start mnist serve with --weights FILE",
        ));
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let digit = digit_from_body(content_type, &body)
        .map_err(|problem| ApiError::new(StatusCode::BAD_REQUEST, problem.to_string()))?;
    let answer = loaded
        .predictor
        .predict(digit.clone())
        .await
        .map_err(|gone| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, gone.to_string()))?;
    let names = loaded.dataset.class_names();
    let prediction = argmax(&answer.probabilities);
    let members = loaded
        .weights
        .iter()
        .zip(answer.members)
        .map(|(weights, probabilities)| Member {
            weights: weights.display().to_string(),
            prediction: argmax(&probabilities),
            probabilities,
        })
        .collect();
    let server_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut response = Json(Prediction {
        prediction,
        label: names[prediction].to_string(),
        probabilities: answer.probabilities,
        members,
        input: digit,
        server_ms,
    })
    .into_response();
    if let Ok(timing) = HeaderValue::from_str(&format!("predict;dur={server_ms:.3}")) {
        response.headers_mut().insert("server-timing", timing);
    }
    Ok(response)
}

async fn runs(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let runs = blocking(move || state.runs.list()).await?;
    Ok(Json(json!({ "runs": runs })).into_response())
}

async fn run(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(id) = id?;
    let detail = blocking(move || state.runs.detail(&id)).await??;
    Ok(Json(detail).into_response())
}

/// Run `id`'s answer for each of its test images (blocking).
fn run_outcomes(state: &AppState, id: &str) -> ApiResult<Arc<RunOutcomes>> {
    let dir = state.runs.resolve(id)?;
    Ok(state.outcomes.for_run(&dir)?)
}

/// One thumbnail of a confusion-matrix cell.
#[derive(Serialize)]
struct Case {
    index: usize,
    probabilities: Vec<f32>,
}

async fn pair(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, usize, usize)>, PathRejection>,
) -> ApiResult<Response> {
    let Path((id, truth, predicted)) = path?;
    let cases = blocking(move || -> ApiResult<Vec<Case>> {
        let outcomes = run_outcomes(&state, &id)?;
        if truth >= outcomes.classes || predicted >= outcomes.classes {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("classes run from 0 to {}", outcomes.classes - 1),
            ));
        }
        Ok(outcomes
            .pair(truth, predicted)
            .into_iter()
            .map(|index| Case {
                index,
                probabilities: outcomes.probabilities_of(index).to_vec(),
            })
            .collect())
    })
    .await??;
    Ok(Json(
        json!({ "truth": truth, "predicted": predicted, "count": cases.len(), "images": cases }),
    )
    .into_response())
}

async fn test_image(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let Path((id, file)) = path?;
    let index: usize = file
        .strip_suffix(".png")
        .unwrap_or(&file)
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "images are named INDEX.png"))?;
    let png = blocking(move || -> ApiResult<Vec<u8>> {
        let outcomes = run_outcomes(&state, &id)?;
        if index >= outcomes.split.len() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("this run scored {} test images", outcomes.split.len()),
            ));
        }
        image_png(&outcomes.split, index).ok_or_else(|| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the image")
        })
    })
    .await??;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        png,
    )
        .into_response())
}

impl From<OutcomeProblem> for ApiError {
    fn from(problem: OutcomeProblem) -> Self {
        let status = match problem {
            OutcomeProblem::NoWeights => StatusCode::CONFLICT,
            OutcomeProblem::Metrics(_) | OutcomeProblem::Load(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, problem.to_string())
    }
}

/// Run file-system and model work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request failed: {e}"),
        )
    })
}
