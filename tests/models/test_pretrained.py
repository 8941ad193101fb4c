"""load_encoder_weights: a saved torchvision resnet34, torch.hub's cache, downloads from a local server."""

import functools
import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision
from torchvision.models import ResNet34_Weights

import pipeline.models.pretrained as pretrained
from pipeline.core.errors import UserError
from pipeline.models.pretrained import load_encoder_weights
from pipeline.models.registry import build_model
from pipeline.models.resnet34_unet import ResNet34UNet
from tests.support import TINY_ARCH

# The file torchvision's resnet34(weights=IMAGENET1K_V1) reads from / downloads to torch.hub's cache.
IMAGENET_NAME = "resnet34-b627a593.pth"


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    """A torchvision resnet34 state dict with non-default BatchNorm statistics and counters."""
    torch.manual_seed(1)
    state = torchvision.models.resnet34(weights=None).state_dict()
    for key, value in state.items():
        if key.endswith("running_mean") or key.endswith("running_var"):
            value.copy_(torch.rand_like(value) + 0.5)
        elif key.endswith("num_batches_tracked"):
            value.fill_(7)
    return state


@pytest.fixture(scope="module")
def saved(reference, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet34.pth"
    torch.save(reference, path)
    return path


@pytest.fixture
def model() -> ResNet34UNet:
    torch.manual_seed(0)
    return build_model("resnet34_unet", **TINY_ARCH["resnet34_unet"])


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME; returns the checkpoints folder torch.hub and torchvision use under it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def server(tmp_path):
    """A local HTTP server for the files in the folder it returns (404 for any other)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join()
    httpd.server_close()


def assert_encoder_is(model, reference):
    state = model.encoder.state_dict()
    assert len(state) == len(reference) - 2  # all but fc.weight and fc.bias
    for key, value in state.items():
        assert torch.equal(value, reference[key]), key


def assert_unchanged(model, before):
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_imagenet_file_name_is_torchvisions():
    assert Path(urlparse(ResNet34_Weights.IMAGENET1K_V1.url).path).name == IMAGENET_NAME
    assert pretrained.IMAGENET_URL == ResNet34_Weights.IMAGENET1K_V1.url


def test_path_loads_every_encoder_tensor_and_leaves_the_decoder(model, reference, saved):
    decoder = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    load_encoder_weights(model, str(saved))
    assert_encoder_is(model, reference)
    assert all(torch.equal(v, decoder[k]) for k, v in model.state_dict().items() if not k.startswith("encoder."))


def test_imagenet_is_read_from_torch_hubs_cache_without_a_download(model, reference, saved, hub, monkeypatch):
    hub.mkdir(parents=True)
    os.symlink(saved, hub / IMAGENET_NAME)
    # torch.hub checks the hash only when it downloads: a cached file is used as it is, so this random
    # one (not b627a593...) loads. A download attempt would reach this dead address and fail.
    monkeypatch.setattr(pretrained, "IMAGENET_URL", f"http://127.0.0.1:{_closed_port()}/{IMAGENET_NAME}")
    load_encoder_weights(model, "imagenet")
    assert_encoder_is(model, reference)
    assert os.listdir(hub) == [IMAGENET_NAME]
    # torchvision's own loader finds the same file there (no download: it would fail without network).
    theirs = ResNet34_Weights.IMAGENET1K_V1.get_state_dict(progress=False, weights_only=True)
    assert all(torch.equal(theirs[k], v) for k, v in reference.items())


def test_imagenet_downloads_into_the_cache_once_and_checks_the_hash(model, reference, saved, hub, server, monkeypatch):
    root, base = server
    data = saved.read_bytes()
    name = f"resnet34-{hashlib.sha256(data).hexdigest()[:8]}.pth"  # torch.hub's <name>-<sha256 prefix>.pth
    (root / name).write_bytes(data)
    monkeypatch.setattr(pretrained, "IMAGENET_URL", f"{base}/{name}")
    load_encoder_weights(model, "imagenet")
    assert_encoder_is(model, reference)
    assert os.listdir(hub) == [name] and (hub / name).read_bytes() == data
    (root / name).unlink()  # the second time comes from the cache
    torch.manual_seed(5)
    other = build_model("resnet34_unet", **TINY_ARCH["resnet34_unet"])
    load_encoder_weights(other, "imagenet")
    assert_encoder_is(other, reference)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "serve, reason",
    [
        (None, "Connection refused"),  # no server: what a machine without network sees, but fast
        ({}, "404"),
        ({IMAGENET_NAME: b"<html>captive portal</html>"}, "invalid hash"),
    ],
)
def test_failed_download_suggests_the_path_form_and_leaves_no_file(model, hub, server, monkeypatch, serve, reason):
    root, base = server
    for name, content in (serve or {}).items():
        (root / name).write_bytes(content)
    url = f"http://127.0.0.1:{_closed_port()}/{IMAGENET_NAME}" if serve is None else f"{base}/{IMAGENET_NAME}"
    monkeypatch.setattr(pretrained, "IMAGENET_URL", url)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError) as err:
        load_encoder_weights(model, "imagenet")
    message = str(err.value)
    assert "\n" not in message
    assert f"downloading {url} failed" in message and reason in message
    assert f"set resnet34_unet.encoder_weights: /path/to/{IMAGENET_NAME}" in message
    assert str(hub / IMAGENET_NAME) in message
    assert os.listdir(hub) == []  # no partial download, no file with the wrong hash
    assert_unchanged(model, before)


def test_a_corrupt_cached_file_is_named_with_how_to_get_it_again(model, hub):
    hub.mkdir(parents=True)
    (hub / IMAGENET_NAME).write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match=f"{IMAGENET_NAME} is not a torch state dict.*delete it to download it again"):
        load_encoder_weights(model, "imagenet")


def test_none_changes_nothing_for_either_model(model):
    torch.manual_seed(0)
    unet = build_model("unet", base_channels=4)
    for m in (model, unet):
        before = {k: v.clone() for k, v in m.state_dict().items()}
        load_encoder_weights(m, "none")
        assert_unchanged(m, before)


def test_the_unet_has_no_encoder_to_load(hub):
    with pytest.raises(UserError, match="imagenet: UNet has no ResNet-34 encoder.*only resnet34_unet has one"):
        load_encoder_weights(build_model("unet", base_channels=4), "imagenet")
    assert not hub.exists()  # refused before any download


def test_missing_path_is_named(model, tmp_path):
    with pytest.raises(UserError, match=r"encoder_weights: .*nothing\.pth: no such file; give none, imagenet or"):
        load_encoder_weights(model, str(tmp_path / "nothing.pth"))


@pytest.mark.parametrize(
    "write",
    [
        lambda p, ref: p.write_bytes(b""),
        lambda p, ref: p.write_bytes(os.urandom(1000)),
        lambda p, ref: p.write_text("resnet34 weights\n"),
        lambda p, ref: (torch.save({"conv1.weight": ref["conv1.weight"]}, p), p.write_bytes(p.read_bytes()[:300])),
    ],
    ids=["empty", "random", "text", "truncated"],
)
def test_a_file_torch_cannot_load_is_refused(model, reference, tmp_path, write):
    path = tmp_path / "weights.pth"
    write(path, reference)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        UserError, match=r"weights\.pth is not a torch state dict \(\w+ in torch\.load\); save one with"
    ):
        load_encoder_weights(model, str(path))
    assert_unchanged(model, before)


@pytest.mark.parametrize("content", [[1, 2], {"conv1.weight": 3}, {0: torch.zeros(1)}], ids=["list", "int", "key"])
def test_a_file_without_named_tensors_is_refused(model, tmp_path, content):
    torch.save(content, tmp_path / "w.pth")
    with pytest.raises(UserError, match=r"w\.pth is not a state dict \(a dict of named tensors\); save one with"):
        load_encoder_weights(model, str(tmp_path / "w.pth"))


def test_wrong_keys_are_named(model, reference, tmp_path):
    # BatchNorm counters are not required (see the last test), so they are not reported missing.
    layer4 = [k for k in reference if k.startswith("layer4.") and not k.endswith("num_batches_tracked")]
    state = {k: v for k, v in reference.items() if not k.startswith("layer4.")}
    torch.save(state, tmp_path / "no_layer4.pth")
    with pytest.raises(
        UserError, match=rf"\(missing: {layer4[0]}, {layer4[1]}, {layer4[2]} and {len(layer4) - 3} more\)"
    ):
        load_encoder_weights(model, str(tmp_path / "no_layer4.pth"))
    state = {**reference, "layer5.0.conv1.weight": torch.zeros(1)}
    state.pop("layer1.0.bn1.bias")
    torch.save(state, tmp_path / "renamed.pth")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match=r"\(missing: layer1\.0\.bn1\.bias; unexpected: layer5\.0\.conv1\.weight\)"):
        load_encoder_weights(model, str(tmp_path / "renamed.pth"))
    assert_unchanged(model, before)


def test_wrong_shapes_are_named(reference, saved):
    model = ResNet34UNet(
        in_channels=1, **TINY_ARCH["resnet34_unet"]
    )  # a grey-scale model cannot take RGB ImageNet weights
    with pytest.raises(UserError, match=r"conv1\.weight \(64, 3, 7, 7\), needs \(64, 1, 7, 7\)\); .* 1 input channels"):
        load_encoder_weights(model, str(saved))


def test_files_without_batchnorm_counters_load_and_keep_the_models_counters(model, reference, tmp_path):
    # Files saved before PyTorch 0.4.1 have no num_batches_tracked.
    counters = [k for k in reference if k.endswith("num_batches_tracked")]
    torch.save({k: v for k, v in reference.items() if k not in counters}, tmp_path / "old.pth")
    for key in counters:
        model.encoder.get_buffer(key).fill_(3)
    load_encoder_weights(model, str(tmp_path / "old.pth"))
    state = model.encoder.state_dict()
    assert all(torch.equal(state[k], reference[k]) for k in reference if k not in counters and not k.startswith("fc."))
    assert len(counters) == 36 and all(state[k].item() == 3 for k in counters)


# resnet18 lacks blocks resnet34 has; resnet50 has every resnet34 name (3, 4, 6, 3 blocks) plus its bottlenecks'.
@pytest.mark.parametrize(("arch", "kind"), [("resnet18", "missing"), ("resnet50", "unexpected")])
def test_another_architecture_fails_in_one_line_naming_the_file_and_the_first_odd_key(model, tmp_path, arch, kind):
    other = getattr(torchvision.models, arch)(weights=None).state_dict()
    path = tmp_path / f"{arch}.pth"
    torch.save(other, path)
    ours = list(model.encoder.state_dict())
    missing = [k for k in ours if k not in other and not k.endswith("num_batches_tracked")]
    odd = {"missing": missing, "unexpected": [k for k in other if k not in ours and not k.startswith("fc.")]}[kind]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError) as caught:
        load_encoder_weights(model, str(path))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"resnet34_unet.encoder_weights: {path} is not a resnet34 state dict ({kind}: {odd[0]}, ")
    assert_unchanged(model, before)
