"""OpenAI's image generation (the openai SDK's `images.generate`) on Bedrock InvokeModel, for
Stability's SD3.5 Large and Nova Canvas; and the emulator refusing malformed image bodies as the
models' request schemas say, to boto3."""

import base64
import json

import boto3
import botocore.config
import botocore.exceptions
import openai
import pytest

from conftest import DEMO_ACCESS_KEY, DEMO_SECRET_KEY

STABILITY = "stability.sd3-5-large-v1:0"
CANVAS = "amazon.nova-canvas-v1:0"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_stability_makes_one_image_of_the_asked_shape(client, gateway):
    result = client.images.generate(model=STABILITY, prompt="a lighthouse at dusk", size="1536x864",
                                    response_format="b64_json", extra_body={"seed": 7, "negative_prompt": "fog"})
    assert [base64.b64decode(d.b64_json)[:8] for d in result.data] == [PNG]
    sent = gateway.last_upstream_request()
    assert sent["path"] == "/model/stability.sd3-5-large-v1%3A0/invoke"
    assert sent["body"] == {"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9", "mode": "text-to-image",
                            "output_format": "png", "seed": 7, "negative_prompt": "fog"}


def test_nova_canvas_makes_n_images_of_the_asked_size(client, gateway):
    result = client.images.generate(model=CANVAS, prompt="a lighthouse", n=3, size="1280x720", quality="hd")
    assert len(result.data) == 3 and all(base64.b64decode(d.b64_json).startswith(PNG) for d in result.data)
    config = gateway.last_upstream_request()["body"]["imageGenerationConfig"]
    assert config == {"width": 1280, "height": 720, "quality": "premium", "numberOfImages": 3}


@pytest.mark.parametrize("model,kwargs,reason", [
    (STABILITY, {"size": "1792x1024"}, "aspect ratio 16:9, 1:1"),
    (STABILITY, {"n": 2}, "`n` must be 1"),
    (CANVAS, {"size": "100x100"}, "multiples of 16"),
    (CANVAS, {"response_format": "url"}, "must be b64_json"),
])
def test_what_a_model_cannot_make_is_a_clear_400(client, model, kwargs, reason):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model=model, prompt="p", **kwargs)
    assert reason in raised.value.body["message"], raised.value.body


@pytest.mark.parametrize("model", [STABILITY, CANVAS])
def test_a_content_filters_refusal_is_openais_content_policy_error(client, model):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model=model, prompt="emulator-fault:content-filter")
    assert raised.value.body["code"] == "content_policy_violation", raised.value.body


@pytest.mark.host_independent
@pytest.mark.parametrize("model,body,reason", [
    (STABILITY, {"prompt": "p", "aspect_ratio": "7:4"}, "aspect_ratio"),
    (STABILITY, {"prompt": "p", "style": "vivid"}, "extraneous key [style]"),
    (CANVAS, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "p"}, "imageGenerationConfig": {"width": 1000}}, "multiple of 16"),
    (CANVAS, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "p"}, "imageGenerationConfig": {"numberOfImages": 6}}, "between 1 and 5"),
    ("amazon.titan-image-generator-v2:0", {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "p", "style": "PHOTOREALISM"}}, "extraneous key [style]"),
])
def test_the_emulator_refuses_malformed_image_bodies(emulator_url, model, body, reason):
    bedrock = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=emulator_url,
                           aws_access_key_id=DEMO_ACCESS_KEY, aws_secret_access_key=DEMO_SECRET_KEY,
                           config=botocore.config.Config(retries={"max_attempts": 1}))
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        bedrock.invoke_model(modelId=model, body=json.dumps(body))
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert reason in raised.value.response["Error"]["Message"]


def test_the_docs_command(gateway):
    from test_anthropic_messages import docs_shell_block, run_readme_command
    (command,) = docs_shell_block("### Images")
    answer = json.loads(run_readme_command(command, gateway))
    assert base64.b64decode(answer["data"][0]["b64_json"]).startswith(PNG)
