//! Image models through InvokeModel, checked against their documented request schemas (Bedrock's
//! model parameter pages; InvokeModel bodies have no botocore shape): Stability's (SD3.5 Large,
//! Stable Image Ultra and Core) and the Canvas envelope (Nova Canvas, Titan Image Generator v2).
//! Each image is the same small PNG; a prompt holding `emulator-fault:content-filter` is refused
//! by the model's content filter, as each family words it.

use serde_json::{json, Map, Value};

/// A 1x1 PNG.
const PIXEL: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
const FILTERED: &str = "emulator-fault:content-filter";

fn unknown_key(object: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), String> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(format!(
            "Malformed input request: #{at}: extraneous key [{key}] is not permitted"
        )),
        None => Ok(()),
    }
}

pub fn stability(body: &Value, sd3: bool) -> Result<Value, String> {
    let object = body
        .as_object()
        .ok_or("Malformed input request: #: expected type: JSONObject")?;
    let known: &[&str] = if sd3 {
        &[
            "prompt",
            "aspect_ratio",
            "mode",
            "seed",
            "negative_prompt",
            "output_format",
            "image",
            "strength",
        ]
    } else {
        &[
            "prompt",
            "aspect_ratio",
            "seed",
            "negative_prompt",
            "output_format",
        ]
    };
    unknown_key(object, known, "")?;
    let prompt = object
        .get("prompt")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty() && p.chars().count() <= 10_000)
        .ok_or("Malformed input request: #/prompt: required, 1 to 10,000 characters")?;
    if let Some(ratio) = object.get("aspect_ratio") {
        const RATIOS: [&str; 9] = [
            "16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21",
        ];
        if !ratio.as_str().is_some_and(|r| RATIOS.contains(&r)) {
            return Err(format!(
                "Malformed input request: #/aspect_ratio: {ratio} is not a valid enum value"
            ));
        }
    }
    if let Some(mode) = object.get("mode") {
        if !matches!(mode.as_str(), Some("text-to-image" | "image-to-image")) {
            return Err(format!(
                "Malformed input request: #/mode: {mode} is not a valid enum value"
            ));
        }
    }
    if let Some(seed) = object.get("seed") {
        if seed.as_u64().is_none_or(|s| s > 4_294_967_294) {
            return Err(format!(
                "Malformed input request: #/seed: {seed} is not between 0 and 4294967294"
            ));
        }
    }
    if let Some(format) = object.get("output_format") {
        if !matches!(format.as_str(), Some("png" | "jpeg" | "webp")) {
            return Err(format!(
                "Malformed input request: #/output_format: {format} is not a valid enum value"
            ));
        }
    }
    if prompt.contains(FILTERED) {
        return Ok(
            json!({ "seeds": [0], "finish_reasons": ["Filter reason: prompt"], "images": [] }),
        );
    }
    Ok(
        json!({ "seeds": [object.get("seed").cloned().unwrap_or(json!(42))], "finish_reasons": [null], "images": [PIXEL] }),
    )
}

pub fn canvas(body: &Value, nova: bool) -> Result<Value, String> {
    let object = body
        .as_object()
        .ok_or("Malformed input request: #: expected type: JSONObject")?;
    unknown_key(
        object,
        &["taskType", "textToImageParams", "imageGenerationConfig"],
        "",
    )?;
    if object.get("taskType").and_then(Value::as_str) != Some("TEXT_IMAGE") {
        return Err("This emulator makes TEXT_IMAGE tasks only; taskType is required.".into());
    }
    let params = object
        .get("textToImageParams")
        .and_then(Value::as_object)
        .ok_or("Malformed input request: #: required key [textToImageParams] not found")?;
    let known: &[&str] = if nova {
        &[
            "text",
            "negativeText",
            "style",
            "conditionImage",
            "controlMode",
            "controlStrength",
        ]
    } else {
        &[
            "text",
            "negativeText",
            "conditionImage",
            "controlMode",
            "controlStrength",
        ]
    };
    unknown_key(params, known, "/textToImageParams")?;
    let text = params
        .get("text")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.chars().count() <= 1024)
        .ok_or(
            "Malformed input request: #/textToImageParams/text: required, 1 to 1024 characters",
        )?;
    let config = object
        .get("imageGenerationConfig")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    unknown_key(
        &config,
        &[
            "width",
            "height",
            "quality",
            "cfgScale",
            "seed",
            "numberOfImages",
        ],
        "/imageGenerationConfig",
    )?;
    let side = |name: &str| -> Result<u64, String> {
        let value = config
            .get(name)
            .map_or(Some(1024), Value::as_u64)
            .unwrap_or(0);
        if (320..=4096).contains(&value) && value.is_multiple_of(16) {
            Ok(value)
        } else {
            Err(format!("Malformed input request: #/imageGenerationConfig/{name}: {value} must be 320 to 4096, a multiple of 16"))
        }
    };
    let (width, height) = (side("width")?, side("height")?);
    if width * height >= 4_194_304 {
        return Err(
            "Malformed input request: the image must have fewer than 4,194,304 pixels".into(),
        );
    }
    if let Some(quality) = config.get("quality") {
        if !matches!(quality.as_str(), Some("standard" | "premium")) {
            return Err(format!("Malformed input request: #/imageGenerationConfig/quality: {quality} is not a valid enum value"));
        }
    }
    let count = config
        .get("numberOfImages")
        .map_or(Some(1), Value::as_u64)
        .unwrap_or(0);
    if !(1..=5).contains(&count) {
        return Err(format!("Malformed input request: #/imageGenerationConfig/numberOfImages: {count} is not between 1 and 5"));
    }
    if text.contains(FILTERED) {
        return Ok(
            json!({ "images": [], "error": "This request has been blocked by our content filters." }),
        );
    }
    Ok(json!({ "images": vec![PIXEL; count as usize] }))
}
