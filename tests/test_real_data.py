"""Real-data loaders on tiny folders built here, and every bad input's error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedcl.cli import main
from fedcl.config import RunConfig
from fedcl.configure import validate
from fedcl.data.real import BCSS_GROUPS, IGNORE, index_slides, parse_data
from fedcl.errors import FedclError
from fedcl.scenarios import scenario_of

SIZE = 32


def _write(folder: Path, name: str, codes: np.ndarray, seed: int) -> None:
    """An RGB image coloured by its label codes (so a model can learn) and its mask."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(256, 3))
    image = palette[codes] + rng.integers(-10, 10, size=(*codes.shape, 3))
    (folder / "images" / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / "masks" / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / "images" / name)
    Image.fromarray(codes.astype(np.uint8), mode="L").save(folder / "masks" / name)


def _codes(values, shape=(2 * SIZE, 3 * SIZE), seed=0):
    rng = np.random.default_rng(seed)
    blocks = rng.choice(values, size=(shape[0] // 8, shape[1] // 8))
    return np.kron(blocks, np.ones((8, 8), dtype=int))


@pytest.fixture
def bcss(tmp_path):
    """Two TCGA sites, two slides each (2 x 3 tiles of 32 px per slide)."""
    root = tmp_path / "bcss"
    for i, site in enumerate(["A1", "A1", "B6", "B6"]):
        codes = _codes([1, 2, 3, 4, 19, 21], seed=i)
        codes[:4, :4] = 0  # a little outside_roi
        _write(root, f"TCGA-{site}-A0S{i}-DX1_xmin{i}_ymin0.png", codes, seed=i)
    return root


def _config(data: str, **kw) -> RunConfig:
    base = dict(clients=2, image_size=SIZE, train_tiles=8, test_tiles=4, batch_size=4)
    return RunConfig(data=data, **(base | kw))


def test_bcss_hospitals_are_tcga_sites_and_codes_are_grouped(bcss):
    config = _config(f"bcss:{bcss}")
    for hospital in (0, 1):
        train, test = (
            scenario_of(config).train_dataset(hospital, 1),
            scenario_of(config).test_dataset(hospital, 0),
        )
        assert len(test) == 4 and len(train) == 8  # 12 tiles per site, disjoint splits
        assert train.images.shape == (8, SIZE, SIZE, 3)
        values = set(np.unique(train.masks)) | set(np.unique(test.masks))
        assert values <= {0, 1, 2, 3, 4, IGNORE}
        assert IGNORE in values  # code 0 (outside_roi) is ignored, not a class
    assert BCSS_GROUPS[19] == BCSS_GROUPS[1] == 1  # angioinvasion is tumor
    assert BCSS_GROUPS[21] == 0  # "other" is fedcl's background/other class


def test_semicol_by_subfolder_and_folder_with_label_map_and_split_file(tmp_path):
    semicol = tmp_path / "semicol"
    for i, site in enumerate(["ukk", "ukk", "lmu", "lmu"]):
        _write(semicol, f"{site}/case{i}.png", _codes([1, 3, 6, 7, 10], seed=i), seed=i)
    data = scenario_of(_config(f"semicol:{semicol}")).train_dataset(1, 1)
    assert set(np.unique(data.masks)) <= {0, 1, 2, 3, 4}

    folder = tmp_path / "folder"
    for i in range(4):
        _write(folder, f"slide{i}.png", _codes([0, 5, 6, 7], seed=i), seed=i)
    split = tmp_path / "split.csv"
    split.write_text("image,hospital\nslide0.png,x\nslide1.png,y\nslide2.png,x\nslide3.png,y\n")
    config = _config(
        f"folder:{folder}", label_map="0:ignore 5:tumor 6:stroma 7:necrosis", data_split=str(split)
    )
    data = scenario_of(config).train_dataset(0, 1)
    assert set(np.unique(data.masks)) <= {1, 2, 4, IGNORE}


@pytest.mark.slow  # a whole run (~50 s); the readers are unit-tested
def test_a_run_on_bcss_data_end_to_end(bcss, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--data", f"bcss:{bcss}", "--clients", "2", "--rounds", "1", "--out", str(out)]
    args += ["--image-size", str(SIZE), "--train-tiles", "8", "--test-tiles", "4"]
    assert main([*args, "--batch-size", "4", "--strategy", "dbc"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["final_dice"] <= 1
    # what the run used is written down, and shown where a person looks
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["data"] == f"bcss:{bcss}"
    assert provenance["hospitals"] == {"0": "A1", "1": "B6"}
    assert "synthetic" in provenance["reference_set"]
    assert "evaluation" in provenance
    err = capsys.readouterr().err
    assert "hospital 0 = A1; hospital 1 = B6" in err and "reference set: 32 tiles" in err


# --- bad input: one paragraph, exit 2, no traceback --------------------------------


def _broken_bcss(tmp_path: Path, case: str) -> Path:
    root = tmp_path / "data"
    for i, site in enumerate(["A1", "B6"]):
        _write(root, f"TCGA-{site}-X{i}.png", _codes([1, 2, 3], seed=i), seed=i)
    image, mask = root / "images" / "TCGA-A1-X0.png", root / "masks" / "TCGA-A1-X0.png"
    if case == "truncated":
        image.write_bytes(image.read_bytes()[:200])
    elif case == "unreadable":
        image.write_text("not an image")
    elif case == "size-mismatch":
        Image.fromarray(np.ones((SIZE, SIZE), np.uint8), mode="L").save(mask)
    elif case == "label-outside-map":
        codes = _codes([1, 2, 3])
        codes[0, 0] = 42
        Image.fromarray(codes.astype(np.uint8), mode="L").save(mask)
    elif case == "missing-mask":
        mask.unlink()
    elif case == "empty":
        for folder in ("images", "masks"):
            for path in (root / folder).iterdir():
                path.unlink()
    return root


DATA_CASES = {
    "truncated": "unreadable or truncated",
    "unreadable": "unreadable or truncated",
    "size-mismatch": "must be the same size",
    "label-outside-map": "label 42 outside the label map",
    "missing-mask": "has no mask",
    "empty": "has no images",
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_is_a_clear_error(tmp_path, capsys, case):
    root = _broken_bcss(tmp_path, case)
    code = main(["run", "--data", f"bcss:{root}", "--clients", "2", "--image-size", str(SIZE)])
    err = capsys.readouterr().err
    assert code == 2
    assert DATA_CASES[case] in err and "Traceback" not in err
    if case != "empty":
        assert "TCGA-A1-X0.png" in err  # names the file


CONFIG_CASES = [
    (["--data", "bcss:/no/such/folder"], "does not exist"),
    (["--data", "dicom:/x"], "KIND:PATH"),
    (["--scenario", "client-drfit"], "Did you mean 'client-drift'"),
    (["--strategy", "fedavgg"], "Did you mean 'fedavg'"),
    (["--model", "unte"], "Did you mean 'unet'"),
    (["--rounds", "-3"], "'rounds' must be >= 1, got -3"),
    (["--drift-ratio", "1.5"], "'drift-ratio' must be in 0..1, got 1.5"),
    (["--max-update-ratio", "0"], "'max-update-ratio' must be > 0"),
    (["--min-replies", "9"], "'min-replies' must be <= clients"),
    (["--data", "folder:/x", "--label-map", "1:tumour"], "unknown class 'tumour'"),
]


@pytest.mark.parametrize(("args", "expected"), CONFIG_CASES, ids=[a[0] for a, _ in CONFIG_CASES])
def test_bad_options_are_clear_errors(capsys, args, expected):
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rounds = [", "not valid TOML"),
        ("drift-ration = 0.3", "Did you mean 'drift-ratio'"),
    ],
    ids=["malformed-toml", "unknown-key"],
)
def test_bad_config_files_are_clear_errors(tmp_path, capsys, text, expected):
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(path) in err and "Traceback" not in err


def test_bcss_as_released_reads_its_rgbs_colornormalized_folder(bcss):
    # The BCSS release ships rgbs_colorNormalized/ beside masks/, with names such as
    # TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500.png
    (bcss / "images").rename(bcss / "rgbs_colorNormalized")
    config = _config(f"bcss:{bcss}")
    released = scenario_of(config).test_dataset(1, 0)
    assert len(released) == 4 and released.images.shape[1:] == (SIZE, SIZE, 3)
    (bcss / "masks").rename(bcss / "gone")
    with pytest.raises(FedclError, match=r"images/ or rgbs_colorNormalized/"):
        scenario_of(config).test_dataset(1, 0)


def test_the_servers_tiles_can_be_real_public_tiles(bcss, tmp_path):
    from fedcl.data import reference_images, root_dataset

    public = tmp_path / "public"  # sites no hospital holds
    for i, site in enumerate(["C8", "D8"]):
        _write(public, f"TCGA-{site}-P{i}-DX1.png", _codes([1, 2, 3, 4], seed=10 + i), seed=i)
    config = _config(f"bcss:{bcss}", server_data=f"bcss:{public}", reference_size=5, root_tiles=4)
    reference, root = reference_images(config, 1), root_dataset(config, 1)
    assert reference.shape == (5, SIZE, SIZE, 3) and len(root) == 4
    every = {tile.tobytes() for tile in reference}
    assert not every & {tile.tobytes() for tile in root.images}  # disjoint sets
    assert set(np.unique(root.masks)) <= {1, 2, 3, 4, IGNORE}  # labelled, grouped
    too_many = config.replace(reference_size=10)  # 12 tiles in all, 14 needed
    with pytest.raises(FedclError, match="has 12 usable 32-px tiles; the server needs 14"):
        root_dataset(too_many, 1)
    with pytest.raises(FedclError, match="no hospital holds"):
        _config(f"bcss:{bcss}", server_data=f"bcss:{bcss}")
    with pytest.raises(FedclError, match="config key 'server-data' must be 'synthetic' or"):
        _config(f"bcss:{bcss}", server_data="bcs:/x")


def test_semicol_as_released_reads_its_case_folders(tmp_path):
    # The challenge's release: DATASET_TRAIN/01_MANUAL/DS_M_<n>/<centre>_case_<k>/
    # image/<case> [d=..,x=..,y=..,w=..,h=..].png beside mask/<same>-labelled.png
    root = tmp_path / "semicol"
    for i, case in enumerate(["ukk_case_01", "ukk_case_02", "lmu_case_01", "lmu_case_02"]):
        folder = root / "DATASET_TRAIN" / "01_MANUAL" / f"DS_M_{1 + i // 2}" / case
        name = f"{case} [d=2.16945,x={i},y=0,w=96,h=64].png"
        _write(folder, name, _codes([0, 1, 3, 6, 7, 10], seed=i), seed=i)
        (folder / "images").rename(folder / "image")
        (folder / "masks" / name).rename(folder / "masks" / name.replace(".png", "-labelled.png"))
        (folder / "masks").rename(folder / "mask")
    slides = index_slides(parse_data(f"semicol:{root}"))
    assert sorted({s.site for s in slides}) == ["lmu", "ukk"]  # the centres are the sites
    data = scenario_of(_config(f"semicol:{root}")).train_dataset(0, 1)
    assert len(data) == 8 and set(np.unique(data.masks)) <= {0, 1, 2, 3, 4, IGNORE}
    (slides[0].mask).unlink()
    with pytest.raises(FedclError, match="has no mask: expected .*-labelled.png"):
        index_slides(parse_data(f"semicol:{root}"))


def test_the_reference_set_can_be_a_folder_of_unlabeled_tiles(bcss, tmp_path):
    from fedcl.data import apart_images, reference_images, root_dataset

    unlabeled = tmp_path / "atlas"  # any folders, images only
    for i in range(3):
        _write(unlabeled, f"scan{i % 2}/tile{i}.png", _codes([1, 2, 3], seed=20 + i), seed=i)
    shutil.rmtree(unlabeled / "masks")
    config = _config(f"bcss:{bcss}", server_data=f"unlabeled:{unlabeled}", reference_size=7)
    reference = reference_images(config, 1)
    assert reference.shape == (7, SIZE, SIZE, 3)  # 3 images x 6 tiles, every tile usable
    # tiles apart from the reference set: after the reference and root sets
    apart = apart_images(config.replace(root_tiles=4), 1)
    assert apart.shape == reference.shape
    assert not {t.tobytes() for t in apart} & {t.tobytes() for t in reference}
    with pytest.raises(FedclError, match="the server needs 19 .* reference-size again"):
        apart_images(config.replace(root_tiles=5), 1)
    with pytest.raises(FedclError, match="needs masks: server-data 'unlabeled:"):
        validate(config.replace(strategy="fltrust"))  # FLTrust's own check
    with pytest.raises(FedclError, match="unlabeled tiles have no masks to train on"):
        _config(f"unlabeled:{unlabeled}")
    assert np.all(root_dataset(config.replace(root_tiles=2), 1).masks == IGNORE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FedclError, match="has no images"):
        reference_images(config.replace(server_data=f"unlabeled:{tmp_path / 'empty'}"), 1)
