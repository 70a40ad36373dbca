//! OpenAI's `POST /v1/images/generations` on Bedrock InvokeModel, for Stability's models (Stable
//! Diffusion 3.5 Large, Stable Image Ultra and Core) and the Titan/Nova Canvas envelope
//! (`amazon.nova-canvas-v1:0`, `amazon.titan-image-generator-v2:0`).
//!
//! OpenAI's `size` becomes Stability's `aspect_ratio` or Canvas's `width`/`height`; a size a model
//! cannot make is refused naming the ones it can. Images come back as `b64_json` only: Bedrock
//! returns image bytes, and the gateway has nowhere to host a `url`, so `response_format: "url"`
//! is refused rather than answered otherwise. A content filter's refusal becomes OpenAI's
//! `content_policy_violation`. Stability's `seed`, `negative_prompt` and `output_format`, and
//! Canvas's `seed`, `negative_prompt` and `style`, are taken as extra members of the request.

use crate::errors::{ErrorKind, GatewayError};
use crate::translated::TranslatedBody;
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFamily {
    Stability,
    /// Nova Canvas and Titan Image Generator v2: `taskType` and `imageGenerationConfig`.
    Canvas,
}

impl ImageFamily {
    pub fn of(model_id: &str) -> Option<ImageFamily> {
        let bare = model_id.rsplit('/').next().unwrap_or(model_id);
        if bare.contains("stability.sd3") || bare.contains("stability.stable-image") {
            Some(ImageFamily::Stability)
        } else if bare.contains("nova-canvas") || bare.contains("titan-image-generator") {
            Some(ImageFamily::Canvas)
        } else {
            None
        }
    }
}

/// Stability's aspect ratios (`aspect_ratio`), as width:height.
const STABILITY_RATIOS: [(u32, u32); 9] = [
    (16, 9),
    (1, 1),
    (21, 9),
    (2, 3),
    (3, 2),
    (4, 5),
    (5, 4),
    (9, 16),
    (9, 21),
];
/// Canvas's styles (Nova Canvas only).
const CANVAS_STYLES: [&str; 8] = [
    "3D_ANIMATED_FAMILY_FILM",
    "DESIGN_SKETCH",
    "FLAT_VECTOR_ILLUSTRATION",
    "GRAPHIC_NOVEL_ILLUSTRATION",
    "MAXIMALISM",
    "MIDCENTURY_RETRO",
    "PHOTOREALISM",
    "SOFT_DIGITAL_PAINTING",
];

#[derive(Deserialize)]
struct ImageRequest {
    prompt: Option<String>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    quality: Option<String>,
    #[serde(default)]
    style: Option<String>,
    #[serde(default)]
    response_format: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    negative_prompt: Option<String>,
    #[serde(default)]
    output_format: Option<String>,
    /// Accepted and not sent: Bedrock has no end-user field.
    #[serde(default, rename = "user")]
    _user: Option<String>,
    #[serde(default, rename = "model")]
    _model: Option<String>,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_request(message)
}

/// `WxH` as numbers.
fn dimensions(size: &str) -> Option<(u32, u32)> {
    let (width, height) = size.split_once('x')?;
    Some((width.parse().ok()?, height.parse().ok()?))
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The InvokeModel body for `model_id`, and the model family that reads the reply.
pub fn prepare(body: &[u8], model_id: &str) -> Result<(Vec<u8>, ImageFamily), GatewayError> {
    let request: ImageRequest =
        serde_json::from_slice(body).map_err(|e| invalid(format!("Invalid image request: {e}")))?;
    let family = ImageFamily::of(model_id).ok_or_else(|| {
        invalid(format!("`{model_id}` is not an image model this gateway supports (Stability's SD3.5 Large, Stable Image Ultra and Core; Nova Canvas; Titan Image Generator v2)."))
    })?;
    let prompt = request
        .prompt
        .filter(|p| !p.is_empty())
        .ok_or_else(|| invalid("`prompt` is required."))?;
    if request
        .response_format
        .as_deref()
        .is_some_and(|f| f != "b64_json")
    {
        return Err(invalid("`response_format` must be b64_json: Bedrock returns the image itself, and the gateway keeps no copy to serve at a URL."));
    }
    let size = request.size.as_deref().unwrap_or("1024x1024");
    let (width, height) = dimensions(size)
        .ok_or_else(|| invalid(format!("`size` must be WIDTHxHEIGHT, got {size:?}.")))?;
    let n = request.n.unwrap_or(1);
    let body = match family {
        ImageFamily::Stability => {
            if n != 1 {
                return Err(invalid(
                    "Stability's models make one image per request: `n` must be 1.",
                ));
            }
            if let Some(quality) = request
                .quality
                .as_deref()
                .filter(|q| !matches!(*q, "auto" | "standard"))
            {
                return Err(invalid(format!(
                    "`quality` {quality:?} has no counterpart in Stability's models."
                )));
            }
            if let Some(style) = request.style.as_deref() {
                return Err(invalid(format!(
                    "`style` {style:?} has no counterpart in Stability's models."
                )));
            }
            let divisor = gcd(width, height).max(1);
            let ratio = (width / divisor, height / divisor);
            if !STABILITY_RATIOS.contains(&ratio) {
                let ratios: Vec<String> = STABILITY_RATIOS
                    .iter()
                    .map(|(w, h)| format!("{w}:{h}"))
                    .collect();
                return Err(invalid(format!(
                    "`size` {size} is not a shape Stability's models make: use a size of aspect ratio {} (1024x1024 is 1:1, 1536x864 is 16:9).",
                    ratios.join(", ")
                )));
            }
            let mut stability = Map::new();
            stability.insert("prompt".into(), prompt.into());
            stability.insert(
                "aspect_ratio".into(),
                format!("{}:{}", ratio.0, ratio.1).into(),
            );
            if model_id.contains("sd3") {
                stability.insert("mode".into(), "text-to-image".into());
            }
            let format = request.output_format.as_deref().unwrap_or("png");
            if !matches!(format, "png" | "jpeg" | "webp") {
                return Err(invalid(format!(
                    "`output_format` must be png, jpeg or webp, got {format:?}."
                )));
            }
            stability.insert("output_format".into(), format.into());
            if let Some(seed) = request.seed {
                stability.insert("seed".into(), seed.into());
            }
            if let Some(negative) = request.negative_prompt {
                stability.insert("negative_prompt".into(), negative.into());
            }
            Value::Object(stability)
        }
        ImageFamily::Canvas => {
            if !(1..=5).contains(&n) {
                return Err(invalid(format!(
                    "`n` must be 1 to 5 for Canvas models, got {n}."
                )));
            }
            let fits = |d: u32| (320..=4096).contains(&d) && d.is_multiple_of(16);
            if !fits(width) || !fits(height) || u64::from(width) * u64::from(height) >= 4_194_304 {
                return Err(invalid(format!(
                    "`size` {size} is not a size Canvas models make: width and height from 320 to 4096, multiples of 16, under 4,194,304 pixels in all (1024x1024, 1280x720, 2048x2048 are)."
                )));
            }
            let quality = match request.quality.as_deref() {
                None | Some("auto" | "standard" | "medium" | "low") => "standard",
                Some("hd" | "high" | "premium") => "premium",
                Some(other) => {
                    return Err(invalid(format!(
                        "`quality` {other:?} is not standard or hd."
                    )))
                }
            };
            let mut text = Map::new();
            text.insert("text".into(), prompt.into());
            if let Some(negative) = request.negative_prompt {
                text.insert("negativeText".into(), negative.into());
            }
            if let Some(style) = request.style {
                if !model_id.contains("nova-canvas") || !CANVAS_STYLES.contains(&style.as_str()) {
                    return Err(invalid(format!(
                        "`style` {style:?} is not a Nova Canvas style ({}).",
                        CANVAS_STYLES.join(", ")
                    )));
                }
                text.insert("style".into(), style.into());
            }
            let mut config = Map::new();
            config.insert("width".into(), width.into());
            config.insert("height".into(), height.into());
            config.insert("quality".into(), quality.into());
            config.insert("numberOfImages".into(), n.into());
            if let Some(seed) = request.seed {
                config.insert("seed".into(), seed.into());
            }
            json!({ "taskType": "TEXT_IMAGE", "textToImageParams": text, "imageGenerationConfig": config })
        }
    };
    let body = serde_json::to_vec(&body).map_err(|e| invalid(e.to_string()))?;
    Ok((body, family))
}

#[derive(Deserialize)]
struct ImagesReply {
    #[serde(default)]
    images: Vec<String>,
    /// Stability: one per image, `null` when it was made, else why not.
    #[serde(default)]
    finish_reasons: Vec<Option<String>>,
    /// Canvas: why images were left out.
    #[serde(default)]
    error: Option<String>,
}

fn content_policy(message: String) -> GatewayError {
    let mut error = GatewayError::new(400, ErrorKind::InvalidRequest, message);
    error.code = Some("content_policy_violation".into());
    error
}

/// OpenAI's reply: `{"created", "data": [{"b64_json"}]}`.
pub fn response(
    body: &[u8],
    family: ImageFamily,
    created: u64,
) -> Result<TranslatedBody, GatewayError> {
    let reply: ImagesReply = serde_json::from_slice(body).map_err(|e| {
        GatewayError::upstream(format!(
            "Bedrock returned an unreadable image response: {e}"
        ))
    })?;
    if let Some(reason) = reply.finish_reasons.iter().flatten().next() {
        return Err(if reason.starts_with("Filter reason") {
            content_policy(format!(
                "Bedrock's content filter refused the image ({reason})."
            ))
        } else {
            GatewayError::upstream(format!("Bedrock could not make the image ({reason})."))
        });
    }
    if reply.images.is_empty() {
        let why = reply
            .error
            .unwrap_or_else(|| "no image was returned".into());
        return Err(if family == ImageFamily::Canvas {
            content_policy(format!("Bedrock made no image: {why}"))
        } else {
            GatewayError::upstream(format!("Bedrock made no image: {why}"))
        });
    }
    let data: Vec<Value> = reply
        .images
        .into_iter()
        .map(|image| json!({ "b64_json": image }))
        .collect();
    let answer = json!({ "created": created, "data": data });
    Ok(TranslatedBody {
        body: serde_json::to_vec(&answer).unwrap_or_default(),
        usage: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(body: &str, model: &str) -> Value {
        serde_json::from_slice(&prepare(body.as_bytes(), model).unwrap().0).unwrap()
    }

    #[test]
    fn openai_requests_become_stability_and_canvas_bodies() {
        assert_eq!(
            sent(
                r#"{"prompt":"a lighthouse","size":"1536x864","seed":7,"negative_prompt":"fog"}"#,
                "stability.sd3-5-large-v1:0"
            ),
            json!({"prompt": "a lighthouse", "aspect_ratio": "16:9", "mode": "text-to-image", "output_format": "png", "seed": 7, "negative_prompt": "fog"})
        );
        assert_eq!(
            sent(
                r#"{"prompt":"a lighthouse"}"#,
                "stability.stable-image-core-v1:1"
            ),
            json!({"prompt": "a lighthouse", "aspect_ratio": "1:1", "output_format": "png"})
        );
        assert_eq!(
            sent(
                r#"{"prompt":"a lighthouse","n":2,"size":"1280x720","quality":"hd","style":"PHOTOREALISM"}"#,
                "amazon.nova-canvas-v1:0"
            ),
            json!({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a lighthouse", "style": "PHOTOREALISM"},
                   "imageGenerationConfig": {"width": 1280, "height": 720, "quality": "premium", "numberOfImages": 2}})
        );
    }

    #[test]
    fn what_a_model_cannot_make_is_refused_naming_what_it_can() {
        for (body, model, reason) in [
            (
                r#"{"prompt":"p","size":"1792x1024"}"#,
                "stability.sd3-5-large-v1:0",
                "aspect ratio 16:9, 1:1",
            ),
            (
                r#"{"prompt":"p","n":2}"#,
                "stability.sd3-5-large-v1:0",
                "`n` must be 1",
            ),
            (
                r#"{"prompt":"p","response_format":"url"}"#,
                "amazon.nova-canvas-v1:0",
                "must be b64_json",
            ),
            (
                r#"{"prompt":"p","size":"100x100"}"#,
                "amazon.nova-canvas-v1:0",
                "multiples of 16",
            ),
            (
                r#"{"prompt":"p","size":"4096x4096"}"#,
                "amazon.nova-canvas-v1:0",
                "4,194,304",
            ),
            (
                r#"{"prompt":"p","style":"vivid"}"#,
                "amazon.nova-canvas-v1:0",
                "not a Nova Canvas style",
            ),
            (
                r#"{"prompt":"p","style":"vivid"}"#,
                "stability.sd3-5-large-v1:0",
                "no counterpart",
            ),
            (
                r#"{"prompt":""}"#,
                "amazon.nova-canvas-v1:0",
                "`prompt` is required",
            ),
            (
                r#"{"prompt":"p"}"#,
                "us.meta.llama3-2-1b-instruct-v1:0",
                "not an image model",
            ),
        ] {
            let error = prepare(body.as_bytes(), model).unwrap_err();
            assert_eq!(error.status, 400);
            assert!(error.message.contains(reason), "{}", error.message);
        }
    }

    #[test]
    fn images_come_back_as_b64_json_and_filters_as_content_policy_errors() {
        let made = response(
            br#"{"seeds":[1],"finish_reasons":[null],"images":["iVBO"]}"#,
            ImageFamily::Stability,
            9,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&made.body).unwrap(),
            json!({"created": 9, "data": [{"b64_json": "iVBO"}]})
        );
        let filtered = response(
            br#"{"seeds":[1],"finish_reasons":["Filter reason: prompt"],"images":[]}"#,
            ImageFamily::Stability,
            9,
        )
        .unwrap_err();
        assert_eq!(
            (filtered.status, filtered.code.as_deref()),
            (400, Some("content_policy_violation"))
        );
        let canvas = response(
            br#"{"images":[],"error":"blocked by our content filters"}"#,
            ImageFamily::Canvas,
            9,
        )
        .unwrap_err();
        assert_eq!(canvas.code.as_deref(), Some("content_policy_violation"));
    }
}
