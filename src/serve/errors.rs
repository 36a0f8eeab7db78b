//! Errors as OpenAI-compatible clients expect them: `{"error": {"message", "type", "param",
//! "code"}}` with the status code that says what to do — 400 fix the request, 401 the key, 404
//! the model, 413 make it smaller, 429 retry later (with `Retry-After`), 503 wait for the load,
//! 500 the engine failed (with the translated cause), 502 a remote engine failed.
//!
//! Messages name the thing and the fix, as everywhere in gemmactl; sent to a client that is not
//! on this machine, file paths are taken out of them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use openai_protocol::{ErrorBody, ErrorDetail};

use crate::domain::ErrorCode;
use crate::supervisor::{EngineError, SupervisorError};

/// An error reply.
#[derive(Debug, Clone)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) kind: &'static str,
    pub(super) code: Option<&'static str>,
    pub(super) param: Option<String>,
    pub(super) message: String,
    /// Seconds to wait before trying again (429, 503).
    pub(super) retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            code: None,
            param: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request is wrong; `param` names the field.
    pub(super) fn bad_request(param: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            param: param.map(str::to_string),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    /// 401: no key, or the wrong one.
    pub(super) fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("invalid_api_key"),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
        }
    }

    /// 404: no such model (or route).
    pub(super) fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some(code),
            ..ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
        }
    }

    /// 413: the body or the prompt is too large.
    pub(super) fn too_large(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("request_too_large"),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                message,
            )
        }
    }

    /// 503: the model is loading and the client asked not to wait.
    pub(super) fn loading(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("model_loading"),
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                message,
            )
        }
    }

    /// 500: something of gemmactl's own failed (the store, a model file).
    pub(super) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The status and shape of a supervisor's refusal or an engine's failure.
    pub(super) fn from_supervisor(e: &SupervisorError) -> ApiError {
        let message = e.to_string();
        match e {
            SupervisorError::QueueFull { .. } => ApiError {
                code: Some("queue_full"),
                retry_after: Some(1),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
            },
            SupervisorError::ModelFailed { .. } | SupervisorError::Pool(_) => ApiError {
                code: Some("model_unavailable"),
                retry_after: Some(10),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    message,
                )
            },
            SupervisorError::Busy { .. } | SupervisorError::ShuttingDown => ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    message,
                )
            },
            SupervisorError::Engine(engine) => from_engine(engine, message),
        }
    }

    /// The error with file paths taken out (for clients on other machines).
    pub(super) fn scrubbed(mut self) -> ApiError {
        self.message = scrub_paths(&self.message);
        self
    }

    /// The JSON body.
    pub(super) fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: Some(self.kind.to_string()),
                param: self.param.clone(),
                code: self.code.map(serde_json::Value::from),
            },
        }
    }
}

fn from_engine(e: &EngineError, message: String) -> ApiError {
    match e.code() {
        Some(ErrorCode::ContextOverflow) => ApiError {
            code: Some("context_length_exceeded"),
            param: Some("messages".into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        },
        Some(ErrorCode::BadRequest) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
        // An image the model cannot take is the request's fault, not the server's.
        Some(ErrorCode::NoVision) => ApiError {
            code: Some("model_cannot_see_images"),
            param: Some("messages".into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        },
        Some(ErrorCode::BadImage) => ApiError {
            code: Some("invalid_image"),
            param: Some("messages".into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        },
        Some(ErrorCode::ModelNotFound) if matches!(e, EngineError::Request { .. }) => {
            ApiError::not_found("model_not_found", message)
        }
        Some(ErrorCode::Unavailable) => ApiError {
            code: Some("upstream_error"),
            ..ApiError::new(StatusCode::BAD_GATEWAY, "server_error", message)
        },
        _ => ApiError {
            code: Some("engine_error"),
            ..ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
        },
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// `message` with every absolute or home-relative file path replaced by `[path]`.
pub(super) fn scrub_paths(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let start = word
            .find(|c: char| !matches!(c, '(' | '"' | '\'' | '`' | '[' | '<'))
            .unwrap_or(word.len());
        let (lead, rest) = word.split_at(start);
        let is_path = (rest.starts_with('/') && rest.len() > 1) || rest.starts_with("~/");
        if is_path {
            let end = rest
                .find([')', '"', '\'', '`', ']', '>', ',', ';'])
                .unwrap_or(rest.len());
            // A sentence's full stop or colon after the path stays.
            let (path, tail) = rest.split_at(end);
            let dot = if path.ends_with(':') || path.ends_with('.') {
                &path[path.len() - 1..]
            } else {
                ""
            };
            out.push_str(lead);
            out.push_str("[path]");
            out.push_str(dot);
            out.push_str(tail);
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_taken_out_and_the_sentence_kept() {
        assert_eq!(
            scrub_paths("cannot read /home/me/.cache/m.gguf: permission denied (see \"/etc/x\")."),
            "cannot read [path]: permission denied (see \"[path]\")."
        );
        assert_eq!(scrub_paths("a / b and ~/x."), "a / b and [path].");
        assert_eq!(scrub_paths("no path here"), "no path here");
    }

    #[test]
    fn refusals_get_their_status_and_retry_after() {
        let full = SupervisorError::QueueFull {
            model: "m".into(),
            queued: 4,
            limit: 4,
        };
        let e = ApiError::from_supervisor(&full);
        assert_eq!(
            (e.status, e.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, Some(1))
        );
        let overflow = SupervisorError::Engine(EngineError::Request {
            code: ErrorCode::ContextOverflow,
            message: "too long".into(),
        });
        let e = ApiError::from_supervisor(&overflow);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body().error.code, Some("context_length_exceeded".into()));
    }
}
