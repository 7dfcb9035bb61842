"""Export: the SavedModel reloads without tf_biggan and matches the in-process EMA generator."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny_models

from tf_biggan import export, imaging, layers, loader, model_files, networks, precision
from tf_biggan import state as state_lib

NUM_CLASSES = 3
DIM_Z = 32
RESOLUTION = 32
CLASS_NAMES = ["circle", "square", "ring"]
BIN = os.path.dirname(sys.executable)


def _tiny_generator(name="generator"):
    return tiny_models.generator(NUM_CLASSES, DIM_Z, name)


def _trained_state():
    """A built TrainState whose EMA generator looks trained.

    Its weights are perturbed and a few training-mode calls move the BN
    moving statistics and the SN `u` vectors away from their initial values,
    so inference mode differs from a fresh network.
    """
    state = tiny_models.train_state(keras.optimizers.Adam, NUM_CLASSES, DIM_Z)
    ema = state.ema_generator
    rng = np.random.default_rng(0)
    for variable in ema.trainable_variables:
        variable.assign(variable + 0.1 * rng.standard_normal(variable.shape).astype(np.float32))
    for i in range(3):
        z = tf.random.stateless_normal([8, DIM_Z], seed=[i, 1])
        ema(z, tf.one_hot(np.arange(8) % NUM_CLASSES, NUM_CLASSES), training=True)
    state.step.assign(17)
    return state


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    state = _trained_state()
    path = export.export_from_state(state, str(root / "export"), CLASS_NAMES)
    # The export divides each kernel by its exact sigma; the in-process reference that the
    # tests compare it with uses the same sigma once refined exactly (after the export, so
    # the export itself starts from the EMA's unconverged u).
    layers.refine_spectral_norms(state.ema_generator, exact=True)
    return state, path


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _run_all(cmds):
    """Runs commands concurrently (each loads TensorFlow); returns their stdouts."""
    processes = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        for cmd in cmds
    ]
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        outputs.append(stdout)
    return outputs


_FRESH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_hub as hub
    import tf_keras

    path, inputs = sys.argv[1], np.load(sys.argv[2])
    z, y, labels = inputs["z"], inputs["y"], inputs["labels"]
    out = {}
    loaded = tf.saved_model.load(path)
    out["default"] = loaded.signatures["default"](
        z=tf.constant(z), y=tf.constant(y), truncation=tf.constant(0.5))["default"].numpy()
    module = hub.load(path)
    out["hub_call"] = module(y=y, z=z, truncation=0.5).numpy()
    layer = hub.KerasLayer(path, signature="default", output_key="default")
    z_in = tf_keras.Input((z.shape[1],))
    y_in = tf_keras.Input((y.shape[1],))
    model = tf_keras.Model([z_in, y_in], layer({"z": z_in, "y": y_in, "truncation": 1.0}))
    out["keras_layer"] = model([z, y]).numpy()
    serve = loaded.signatures["serving_default"]

    def images(labels, seed, truncation=0.5):
        return serve(labels=tf.constant(labels, tf.int64), truncation=tf.constant(truncation),
                     seed=tf.constant(seed, tf.int64))["images"].numpy()

    out["serve_3"] = images(labels, 3)
    out["serve_3_again"] = images(labels, 3)
    out["serve_4"] = images(labels, 4)
    errors = {}
    for name, call in [
        ("label_K", lambda: images([0, y.shape[1]], 3)),
        ("label_negative", lambda: images([-1, 0], 3)),
        ("call_wrong_z", lambda: module(y=y, z=z[:, :-1], truncation=1.0)),
        ("call_wrong_y", lambda: module(y=y[:, :-1], z=z, truncation=1.0)),
        ("signature_wrong_z", lambda: loaded.signatures["default"](
            z=tf.constant(z[:, :-1]), y=tf.constant(y), truncation=tf.constant(1.0))),
    ]:
        try:
            call()
            errors[name] = "none"
        except Exception as e:  # noqa: BLE001 - the class name is what the test checks
            errors[name] = type(e).__name__
    info = {
        "errors": errors,
        "tf_biggan_imported": "tf_biggan" in sys.modules,
        "dim_z": int(loaded.dim_z.numpy()),
        "num_classes": int(loaded.num_classes.numpy()),
        "resolution": int(loaded.resolution.numpy()),
    }
    np.savez(sys.argv[3], **out)
    print(json.dumps(info))
    """
)


@pytest.mark.slow
def test_fresh_process_matches_in_process_ema_generator(exported, tmp_path):
    state, path = exported
    ema = state.ema_generator
    rng = np.random.default_rng(5)
    z = rng.standard_normal([4, DIM_Z]).astype(np.float32)
    labels = np.array([0, 1, 2, 1])
    y = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    # Non-one-hot class weights too: the default signature takes any y.
    y[3] = [0.25, 0.5, 0.25]
    np.savez(tmp_path / "in.npz", z=z, y=y, labels=labels)
    script = tmp_path / "fresh.py"
    script.write_text(_FRESH_SCRIPT)
    info = json.loads(
        _run([sys.executable, str(script), path, str(tmp_path / "in.npz"), str(tmp_path / "o.npz")])
    )
    out = np.load(tmp_path / "o.npz")

    assert info["tf_biggan_imported"] is False
    assert (info["dim_z"], info["num_classes"], info["resolution"]) == (DIM_Z, 3, RESOLUTION)
    expected = ema(z, y, training=False).numpy()
    assert expected.shape == (4, RESOLUTION, RESOLUTION, 3)
    for key in ("default", "hub_call", "keras_layer"):
        np.testing.assert_allclose(out[key], expected, atol=1e-4, err_msg=key)
        assert out[key].dtype == np.float32

    # serving_default with seed s samples z = imaging.truncated_z(B, dim_z, t, seed=s).
    z3 = imaging.truncated_z(4, DIM_Z, 0.5, seed=3)
    assert np.abs(z3).max() <= 0.5
    want = imaging.to_uint8(ema(z3, np.eye(3, dtype=np.float32)[labels], training=False)).numpy()
    got = out["serve_3"]
    assert got.dtype == np.uint8 and got.shape == (4, RESOLUTION, RESOLUTION, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    np.testing.assert_array_equal(out["serve_3"], out["serve_3_again"])
    assert np.abs(out["serve_3"].astype(int) - out["serve_4"].astype(int)).mean() > 1.0

    assert info["errors"] == {
        "label_K": "InvalidArgumentError",
        "label_negative": "InvalidArgumentError",
        "call_wrong_z": "InvalidArgumentError",
        "call_wrong_y": "InvalidArgumentError",
        "signature_wrong_z": "InvalidArgumentError",
    }


def test_inference_mode_differs_from_training_mode(exported):
    # Guards the comparison above: the exported numbers are those of inference mode.
    state, _ = exported
    z = tf.random.stateless_normal([4, DIM_Z], seed=[3, 3])
    y = tf.one_hot([0, 1, 2, 0], NUM_CLASSES)
    ema = state.ema_generator
    copy = _tiny_generator("copy")
    copy.build_by_call()
    state_lib.copy_variables(ema.variables, copy.variables)
    assert np.abs(copy(z, y, training=True) - ema(z, y, training=False)).max() > 1e-3


@pytest.mark.slow
def test_saved_model_cli_show_and_run(exported):
    _, path = exported
    cli = os.path.join(BIN, "saved_model_cli")
    shown, ran = _run_all(
        [
            [cli, "show", "--all", "--dir", path],
            [
                cli,
                "run",
                "--dir",
                path,
                "--tag_set",
                "serve",
                "--signature_def",
                "serving_default",
                "--input_exprs",
                "labels=[0,1];truncation=0.5;seed=3",
            ],
        ]
    )
    default = shown[shown.index("signature_def['default']") :]
    default = default[: default.index("signature_def['serving_default']")]
    serving = shown[shown.index("signature_def['serving_default']") :]
    serving = serving[: serving.index("Method name is")]

    def field(block, name):
        start = block.index(f"['{name}'] tensor_info:")
        lines = block[start:].splitlines()[1:3]
        return tuple(line.split(":", 1)[1].strip() for line in lines)

    assert field(default, "z") == ("DT_FLOAT", f"(-1, {DIM_Z})")
    assert field(default, "y") == ("DT_FLOAT", f"(-1, {NUM_CLASSES})")
    assert field(default, "truncation") == ("DT_FLOAT", "()")
    assert field(default, "default") == ("DT_FLOAT", f"(-1, {RESOLUTION}, {RESOLUTION}, 3)")
    assert field(serving, "labels") == ("DT_INT64", "(-1)")
    assert field(serving, "truncation") == ("DT_FLOAT", "()")
    assert field(serving, "seed") == ("DT_INT64", "()")
    assert field(serving, "images") == ("DT_UINT8", f"(-1, {RESOLUTION}, {RESOLUTION}, 3)")

    assert "Result for output key images" in ran


def test_assets_and_version_folders(exported, tmp_path):
    state, path = exported
    assert os.path.basename(path) == "1"
    with open(os.path.join(path, "assets", "config.json")) as f:
        config = json.load(f)
    assert config == {
        "resolution": RESOLUTION,
        "dim_z": DIM_Z,
        "num_classes": NUM_CLASSES,
        "class_names": CLASS_NAMES,
        "generator": state.ema_generator.get_config(),
        "step": 17,
        "precision": "float32",
    }
    with open(os.path.join(path, "assets", "class_names.txt")) as f:
        assert f.read() == "circle\nsquare\nring\n"

    out = str(tmp_path / "models")
    os.makedirs(os.path.join(out, "7"))
    os.makedirs(os.path.join(out, "notes"))
    assert export.next_version(out) == 8
    first = export.export_generator(state.ema_generator, out)
    assert os.path.basename(first) == "8"
    assert export.next_version(out) == 9
    assert sorted(os.listdir(out)) == ["7", "8", "notes"]  # no temporary folder left
    assert os.path.exists(os.path.join(first, "saved_model.pb"))
    with pytest.raises(FileExistsError, match="8"):
        export.export_generator(state.ema_generator, out, version=8)
    with pytest.raises(ValueError, match="positive int"):
        export.export_generator(state.ema_generator, out, version=0)
    with pytest.raises(ValueError, match="class names"):
        export.export_generator(state.ema_generator, out, class_names=["a", "b"])


def test_folding_keeps_outputs_and_writes_nothing(exported):
    state, _ = exported
    ema = state.ema_generator
    folded = precision.inference_copy(ema)
    module = export.ExportModule(folded)
    z = tf.random.stateless_normal([3, DIM_Z], seed=[9, 9])
    y = tf.one_hot([2, 0, 1], NUM_CLASSES)
    before = [v.numpy().copy() for v in module.generator_variables]
    out = module.default(z, y, tf.constant(0.7))["default"]
    np.testing.assert_allclose(out, ema(z, y, training=False), atol=1e-5)
    np.testing.assert_allclose(module(y=y, z=z, truncation=1.0), out, atol=0)
    module.serve(tf.constant([0, 2], tf.int64), tf.constant(1.0), tf.constant(1, tf.int64))
    for b, v in zip(before, module.generator_variables, strict=True):
        np.testing.assert_array_equal(b, v.numpy())
    # Each folded kernel is W / sigma with sigma the top singular value of W, and the
    # original generator is left as it was.
    for original, layer in (
        (ema.linear, folded.linear),
        (ema.blocks[1].conv2, folded.blocks[1].conv2),
    ):
        assert layer.folded and not original.folded
        w = original.kernel.numpy().reshape(-1, original.kernel.shape[-1]).astype(np.float64)
        sigma = np.linalg.svd(w, compute_uv=False)[0]
        np.testing.assert_allclose(
            layer.kernel.numpy().reshape(w.shape), w / sigma, rtol=1e-5, atol=1e-7
        )


def _saved_sn_kernels(path, shared_embedding):
    """The SN kernels stored in the SavedModel at `path`, as float64 `[fan_in, out]` arrays.

    Every variable of rank >= 2 that the served functions read is an SN kernel, except G's
    shared class embedding (not spectrally normalised), told apart by its value.
    """
    loaded = tf.saved_model.load(path)
    kernels = [v.numpy() for v in loaded.generator_variables if v.shape.rank >= 2]
    rest = [k for k in kernels if not np.array_equal(k, shared_embedding)]
    assert len(rest) == len(kernels) - 1
    return [k.reshape(-1, k.shape[-1]).astype(np.float64) for k in rest]


@pytest.mark.slow
def test_every_exported_kernel_has_top_singular_value_one(tmp_path):
    # An EMA generator as training leaves it: G's weights and u (the EMA copies u), then
    # weights that moved on (averaging) without u following them.
    state = tiny_models.train_state(keras.optimizers.Adam, NUM_CLASSES, DIM_Z)
    generator, ema = state.generator, state.ema_generator
    for i in range(5):
        z = tf.random.stateless_normal([8, DIM_Z], seed=[i, 2])
        generator(z, tf.one_hot(np.arange(8) % NUM_CLASSES, NUM_CLASSES), training=True)
    state_lib.copy_variables(generator.variables, ema.variables)
    rng = np.random.default_rng(1)
    sn_layers = layers.spectral_layers(ema)
    for layer in sn_layers:
        kernel = layer.kernel.numpy()
        noise = rng.standard_normal(kernel.shape).astype(np.float32)
        layer.kernel.assign(kernel + 0.5 * np.std(kernel) * noise)
    # The stale u really is off: the estimate inference would use misses some sigma by > 1%.
    errors = []
    for layer in sn_layers:
        w = layer.kernel.numpy().reshape(-1, layer.kernel.shape[-1]).astype(np.float64)
        _, inverse_sigma = layer.kernel_and_inverse_sigma(training=False)
        errors.append(abs(1.0 / float(inverse_sigma) / np.linalg.svd(w, compute_uv=False)[0] - 1))
    assert max(errors) > 1e-2

    path = export.export_generator(ema, str(tmp_path / "export"))
    kernels = _saved_sn_kernels(path, ema.shared_embedding.kernel.numpy())
    assert len(kernels) == len(sn_layers)
    for kernel in kernels:
        np.testing.assert_allclose(np.linalg.svd(kernel, compute_uv=False)[0], 1.0, atol=1e-3)


def test_exported_kernels_of_the_trained_state_have_top_singular_value_one(exported):
    state, path = exported
    kernels = _saved_sn_kernels(path, state.ema_generator.shared_embedding.kernel.numpy())
    assert len(kernels) == len(layers.spectral_layers(state.ema_generator))
    for kernel in kernels:
        np.testing.assert_allclose(np.linalg.svd(kernel, compute_uv=False)[0], 1.0, atol=1e-3)


def _signatures(loaded):
    """Every signature's inputs and outputs: `{name: (inputs, outputs)}`, each a sorted list of
    `(name, dtype, shape)`."""

    def specs(structure):
        return sorted((k, v.dtype.name, tuple(v.shape.as_list())) for k, v in structure.items())

    return {
        name: (specs(f.structured_input_signature[1]), specs(f.structured_outputs))
        for name, f in loaded.signatures.items()
    }


@pytest.mark.slow
def test_export_cli_from_model_dir_in_float32_and_bfloat16(tmp_path):
    from test_precision import BFLOAT16_MEAN_ABS_BOUND
    from test_sample import _generator

    generator = _generator(3)  # weights and BN statistics off their initial values
    model_dir = str(tmp_path / "run")
    model_files.write_model_config(model_dir, generator, CLASS_NAMES)
    step = tf.Variable(40, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(ema_generator=generator, step=step)
    tf.train.CheckpointManager(checkpoint, model_dir, 2).save(checkpoint_number=40)
    out = str(tmp_path / "export")
    command = [sys.executable, "-m", "tf_biggan.export", f"--model_dir={model_dir}"]
    printed = _run([*command, f"--export_dir={out}"])
    assert printed.strip().endswith(os.path.join(out, "1"))
    _run([*command, f"--export_dir={out}", "--precision=bfloat16"])
    configs = []
    for version in ("1", "2"):
        with open(os.path.join(out, version, "assets", "config.json")) as f:
            configs.append(json.load(f))
    assert configs[0]["step"] == 40 and configs[0]["class_names"] == CLASS_NAMES
    assert configs[0]["precision"] == "float32" and configs[1]["precision"] == "bfloat16"
    assert {**configs[1], "precision": "float32"} == configs[0]
    full, half = (tf.saved_model.load(os.path.join(out, v)) for v in ("1", "2"))
    # A client sees the same signatures: names, dtypes and shapes of inputs and outputs.
    assert _signatures(half) == _signatures(full)
    assert set(_signatures(full)) == {"default", "serving_default"}
    layers.refine_spectral_norms(generator, exact=True)
    z = imaging.truncated_z(6, DIM_Z, 1.0, seed=2)
    y = tf.one_hot([1, 2, 0, 1, 2, 0], NUM_CLASSES)
    images = [
        m.signatures["default"](z=z, y=y, truncation=tf.constant(1.0))["default"].numpy()
        for m in (full, half)
    ]
    np.testing.assert_allclose(images[0], generator(z, y, training=False), atol=1e-4)
    assert np.abs(images[1] - images[0]).mean() < BFLOAT16_MEAN_ABS_BOUND
    assert np.abs(images[1] - images[0]).max() > 1e-4  # bfloat16 really computed
    np.testing.assert_array_equal(half(y=y, z=z, truncation=1.0).numpy(), images[1])
    labels, seed = tf.constant([0, 2], tf.int64), tf.constant(3, tf.int64)
    served = [
        m.signatures["serving_default"](labels=labels, truncation=tf.constant(0.5), seed=seed)
        for m in (full, half)
    ]
    assert served[1]["images"].dtype == tf.uint8
    difference = np.abs(served[1]["images"].numpy() / 127.5 - served[0]["images"].numpy() / 127.5)
    assert difference.mean() < BFLOAT16_MEAN_ABS_BOUND
    # The bfloat16 export stores the folded kernels in bfloat16.
    dtypes = {v.dtype for v in half.generator_variables if v.shape.rank >= 2}
    assert tf.bfloat16 in dtypes


def test_keras3_model_wrapping_the_saved_model(exported):
    # The Keras 3 recipe of docs/serving.md (hub.KerasLayer is a tf_keras layer).
    state, path = exported

    class BigGANGenerator(keras.layers.Layer):
        def __init__(self, path, resolution, **kwargs):
            super().__init__(**kwargs)
            self.module = tf.saved_model.load(path)
            self.resolution = resolution

        def call(self, z, y):
            out = self.module.signatures["default"](z=z, y=y, truncation=tf.constant(1.0))
            return out["default"]

        def compute_output_shape(self, z_shape, y_shape):
            return (z_shape[0], self.resolution, self.resolution, 3)

    z_in, y_in = keras.Input((DIM_Z,)), keras.Input((NUM_CLASSES,))
    model = keras.Model([z_in, y_in], BigGANGenerator(path, RESOLUTION)(z_in, y_in))
    z = imaging.truncated_z(2, DIM_Z, 1.0, seed=8)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[[2, 1]]
    np.testing.assert_allclose(
        model.predict([z, y], verbose=0), state.ema_generator(z, y, training=False), atol=1e-4
    )


@pytest.mark.slow
def test_export_leaves_the_logging_levels_as_it_found_them(tmp_path):
    # SavedModel saving sets an unset absl level to WARNING; INFO lines of whatever ran next
    # (a resumed training run in the same process) were lost.
    import logging

    absl_logger = logging.getLogger("absl")
    before = absl_logger.level
    absl_logger.setLevel(logging.NOTSET)
    try:
        generator = _tiny_generator()
        generator.build_by_call()
        export.export_generator(generator, str(tmp_path / "export"))
        assert absl_logger.level == logging.NOTSET
    finally:
        absl_logger.setLevel(before)


@pytest.mark.slow
def test_truncation_selects_the_standing_statistics_in_every_signature(tmp_path):
    generator = networks.Generator(**dict(_tiny_generator().get_config(), num_standing_stats=3))
    generator.build_by_call()
    tiny_models.fill_standing_stats(generator, seed=3)
    layers.refine_spectral_norms(generator, exact=True)
    loaded = tf.saved_model.load(export.export_generator(generator, str(tmp_path / "e")))
    default, serve = loaded.signatures["default"], loaded.signatures["serving_default"]
    z = imaging.truncated_z(4, DIM_Z, 0.5, seed=9)
    y = tf.one_hot([0, 1, 2, 0], NUM_CLASSES)
    for t in (0.5, 0.8, 0.0, 2.0):
        expected = generator(z, y, training=False, truncation=tf.constant(t)).numpy()
        got = default(z=z, y=y, truncation=tf.constant(t))["default"].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4)
        np.testing.assert_allclose(loaded(y=y, z=z, truncation=t).numpy(), expected, atol=1e-4)
    moving = generator(z, y, training=False).numpy()
    standing = default(z=z, y=y, truncation=tf.constant(0.5))["default"].numpy()
    assert np.abs(standing - moving).max() > 1e-2
    # serving_default: its own z for the seed, the statistics of the same truncation.
    labels = tf.constant([0, 1, 2, 0], tf.int64)
    served = serve(labels=labels, truncation=tf.constant(0.5), seed=tf.constant(9, tf.int64))
    expected = imaging.to_uint8(default(z=z, y=y, truncation=tf.constant(0.5))["default"]).numpy()
    assert np.abs(served["images"].numpy().astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.slow
def test_a_deep_generator_exports_as_biggan_does(tmp_path):
    # BigGAN-deep through the same export: every SN kernel folded, the signatures as above.
    ema = tiny_models.generator(NUM_CLASSES, DIM_Z, "ema_generator", architecture="deep")
    ema.build_by_call()
    rng = np.random.default_rng(1)
    for variable in ema.trainable_variables:
        variable.assign(variable + 0.1 * rng.standard_normal(variable.shape).astype(np.float32))
    ema(tf.random.normal([8, DIM_Z]), tf.one_hot(np.arange(8) % 3, 3), training=True)
    path = export.export_generator(ema, str(tmp_path / "export"), CLASS_NAMES)
    layers.refine_spectral_norms(ema, exact=True)
    loaded = tf.saved_model.load(path)
    z = rng.standard_normal([3, DIM_Z]).astype(np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[[2, 0, 1]]
    got = loaded.signatures["default"](
        z=tf.constant(z), y=tf.constant(y), truncation=tf.constant(1.0)
    )["default"]
    np.testing.assert_allclose(got, ema(z, y, training=False), atol=1e-4)
    served = loaded.signatures["serving_default"](
        labels=tf.constant([0, 2], tf.int64),
        truncation=tf.constant(0.5),
        seed=tf.constant(3, tf.int64),
    )["images"]
    assert served.dtype == tf.uint8 and served.shape == (2, RESOLUTION, RESOLUTION, 3)
    with open(os.path.join(path, "assets", "config.json")) as f:
        assert json.load(f)["generator"]["architecture"] == "deep"
    # The loader of sampling and evaluation reads it as any export.
    loaded = loader.load_generator(saved_model=path)
    np.testing.assert_allclose(loaded.generate(z, y), got, atol=1e-5)
