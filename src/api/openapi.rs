//! The OpenAPI document of the API, generated from the handlers and wire types
//! (`utoipa`), served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{AdditionalProperties, AllOf, Object, ObjectBuilder, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::Problem;
use super::health::{Check, Health, Readiness};
use super::jobs::JobList;
use super::live::{
    CreatedStream, NewStream, PinList, PinView, RenditionView, StreamList, StreamView,
};
use super::objects::{ObjectView, UploadBody};
use crate::jobs::error::ErrorCode;
use crate::jobs::model::{JobErrorInfo, JobOutput, JobResult, JobStatus, JobView};
use crate::jobs::spec::{InputSpec, JobSpec, RenditionsSpec};
use crate::live::pins::PinSpec;
use crate::live::registry::{InputInfo, StreamState};
use crate::media::probe::{Probe, StreamProbe};
use crate::media::transcode::{Format, HlsOutput, HlsVariant, Mp4Output, Output, Skipped};
use crate::overlay::layout::Rect;
use crate::overlay::spec::{PositionSpec, PriceSpec, TagSpec};
use crate::overlay::{TagOutput, TagsOutput};
use crate::thumbnail::encode::StillFormat;
use crate::thumbnail::resize::{Filter, Fit};
use crate::thumbnail::spec::{BoxSpec, QualitySpec, StoryboardSpec, ThumbnailsSpec, TimeSpec};
use crate::thumbnail::{SheetEntry, StillEntry, StillOutput, VttEntry};
use crate::validation::FieldError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "media-node",
        description = "Media processing node: jobs (probe, transcode, thumbnails, shoppable tags), \
                       live streams, object uploads, published media, health and metrics. Errors are \
                       `application/problem+json` with a stable `code`."
    ),
    paths(
        super::jobs::create,
        super::jobs::list,
        super::jobs::get,
        super::jobs::cancel,
        super::objects::put,
        super::live::create,
        super::live::list,
        super::live::get,
        super::live::delete,
        super::live::pin,
        super::live::pins,
        super::live::unpin,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
    ),
    components(schemas(
        JobSpec, InputSpec, JobView, JobStatus, JobErrorInfo, ErrorCode, JobList, FieldError, Problem,
        ObjectView, Probe, StreamProbe, Health, Readiness, Check, RenditionsSpec, Format,
        Output, Mp4Output, HlsOutput, HlsVariant, Skipped, ThumbnailsSpec, StoryboardSpec,
        TimeSpec, BoxSpec, QualitySpec, StillFormat, Filter, Fit, StillOutput, StillEntry,
        SheetEntry, VttEntry, TagSpec, PriceSpec, PositionSpec, TagOutput, TagsOutput, Rect,
        NewStream, StreamView, CreatedStream, StreamList, StreamState, InputInfo, PinSpec, RenditionView,
        PinView, PinList, JobResult, JobOutput, UploadBody
    )),
    modifiers(&BearerAuth, &CommonErrors, &ProblemJson, &MergeFlattened),
    tags(
        (name = "jobs", description = "Enqueue and follow media jobs"),
        (name = "objects", description = "Upload inputs"),
        (name = "live", description = "Live streams: keys, state, replays"),
        (name = "ops", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The answers every route of a kind can give, documented once here rather
/// than on each handler: 401 on every `/v1` route (the bearer check runs
/// before the handler) and 503 (each reads or writes a backend), and 400, 413
/// and 415 on every JSON body (malformed, over `limits.max_json_bytes`, not
/// `application/json`).
struct CommonErrors;

impl CommonErrors {
    const V1: &[(&str, &str)] = &[
        ("401", "No or wrong bearer token"),
        ("403", "`forbidden`: the token's role may not do this"),
        (
            "503",
            "The job store or the object store is unavailable; retry later",
        ),
    ];
    const JSON_BODY: &[(&str, &str)] = &[
        ("400", "Invalid JSON"),
        ("413", "JSON body over `limits.max_json_bytes`"),
        ("415", "Body not `application/json`"),
    ];

    fn add(operation: &mut Operation, answers: &[(&str, &str)]) {
        for (status, description) in answers {
            let problem = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build();
            operation
                .responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| {
                    ResponseBuilder::new()
                        .description(*description)
                        .content(PROBLEM_JSON, problem)
                        .build()
                        .into()
                });
        }
    }
}

/// Every operation of the document, with its path.
fn operations_mut(
    openapi: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = (&String, &mut Operation)> {
    openapi.paths.paths.iter_mut().flat_map(|(path, item)| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        .map(move |operation| (path, operation))
    })
}

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, operation) in operations_mut(openapi) {
            if path.starts_with("/v1/") {
                Self::add(operation, Self::V1);
            }
            let json_body = operation
                .request_body
                .as_ref()
                .is_some_and(|b| b.content.contains_key("application/json"));
            if json_body {
                Self::add(operation, Self::JSON_BODY);
            }
        }
    }
}

const PROBLEM_JSON: &str = "application/problem+json";

/// Every error answer is `application/problem+json`, the content type the
/// node sends; a handler's `body = Problem` would otherwise document it as
/// `application/json`.
struct ProblemJson;

impl Modify for ProblemJson {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let problem = Ref::from_schema_name("Problem").ref_location;
        for (_, operation) in operations_mut(openapi) {
            for response in operation.responses.responses.values_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                let is_problem = response.content.get("application/json").is_some_and(
                    |c| matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location == problem),
                );
                if is_problem
                    && let Some(content) = response.content.shift_remove("application/json")
                {
                    response.content.insert(PROBLEM_JSON.to_string(), content);
                }
            }
        }
    }
}

/// A wire type that `#[serde(flatten)]`s a closed one (`deny_unknown_fields`,
/// `additionalProperties: false`) is documented by `utoipa` as `allOf` of the
/// two, which no object can match: the closed part refuses the other part's
/// fields. Such schemas become the one object they are (`PinView`).
struct MergeFlattened;

impl MergeFlattened {
    fn object<'a>(
        schemas: &'a std::collections::BTreeMap<String, RefOr<Schema>>,
        item: &'a RefOr<Schema>,
    ) -> Option<(&'a Object, bool)> {
        match item {
            RefOr::T(Schema::Object(o)) => Some((o, false)),
            RefOr::Ref(r) => {
                let name = r.ref_location.rsplit('/').next()?;
                match schemas.get(name)? {
                    RefOr::T(Schema::Object(o)) => {
                        let closed = matches!(
                            o.additional_properties.as_deref(),
                            Some(AdditionalProperties::FreeForm(false))
                        );
                        Some((o, closed))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn merged(
        schemas: &std::collections::BTreeMap<String, RefOr<Schema>>,
        all: &AllOf,
    ) -> Option<Object> {
        let parts: Vec<(&Object, bool)> = all
            .items
            .iter()
            .map(|item| Self::object(schemas, item))
            .collect::<Option<_>>()?;
        if !parts.iter().any(|(_, closed)| *closed) {
            return None;
        }
        let mut merged = ObjectBuilder::new().description(all.description.clone());
        for (part, _) in parts {
            for (name, schema) in &part.properties {
                merged = merged.property(name.clone(), schema.clone());
            }
            for name in &part.required {
                merged = merged.required(name.clone());
            }
        }
        Some(merged.build())
    }
}

impl Modify for MergeFlattened {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let merged: Vec<(String, Object)> = components
            .schemas
            .iter()
            .filter_map(|(name, schema)| match schema {
                RefOr::T(Schema::AllOf(all)) => {
                    Self::merged(&components.schemas, all).map(|o| (name.clone(), o))
                }
                _ => None,
            })
            .collect();
        for (name, object) in merged {
            components
                .schemas
                .insert(name, RefOr::T(Schema::Object(object)));
        }
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The document as pretty JSON (`media-node openapi`, `docs/openapi.json`).
pub fn document_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_the_job_api() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/v1/jobs",
            "/v1/jobs/{id}",
            "/v1/jobs/{id}/cancel",
            "/v1/objects/{key}",
            "/readyz",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        assert!(doc["components"]["schemas"]["JobSpec"].is_object());
    }

    #[test]
    fn every_v1_route_documents_401_and_every_json_body_415() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                if path.starts_with("/v1/") {
                    assert!(responses.contains_key("401"), "{method} {path}");
                }
                if op["requestBody"]["content"]["application/json"].is_object() {
                    for status in ["400", "413", "415"] {
                        assert!(responses.contains_key(status), "{status}: {method} {path}");
                    }
                }
            }
        }
    }

    #[test]
    fn errors_are_problem_json_and_pins_one_object() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        let content = response["content"].as_object();
                        if path == "/readyz" {
                            continue;
                        }
                        assert!(
                            content.is_some_and(|c| c.keys().eq([PROBLEM_JSON].iter())),
                            "{status}: {method} {path}: {response}"
                        );
                    }
                }
            }
        }
        let pin = &doc["components"]["schemas"]["PinView"];
        assert_eq!(pin["type"], "object", "{pin}");
        for field in ["id", "product_id", "price", "position", "start", "end"] {
            assert!(pin["properties"][field].is_object(), "{field}: {pin}");
        }
    }

    #[test]
    fn committed_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed.trim() == document_json().trim(),
            "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json`"
        );
    }
}
