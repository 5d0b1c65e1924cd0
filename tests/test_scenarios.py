"""Scenarios: who drifts, when stages change, what the data looks like."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcl.config import RunConfig
from fedcl.configure import from_toml, is_builtin_key, load_config
from fedcl.data import NUM_CLASSES, reference_images
from fedcl.data.real import IGNORE
from fedcl.data.shifts import bias_annotations, typical_change, typical_shift
from fedcl.data.stain import Stain, visible_change
from fedcl.data.synthetic import SOLID, typical_tissue
from fedcl.data.tissue import TISSUES
from fedcl.errors import FedclError
from fedcl.plugins import SCENARIOS
from fedcl.scenarios import scenario_of
from fedcl.scenarios.sections import DRIFT_KINDS, MAX_STAGES
from fedcl.scenarios.tiles import (
    hospital_dataset,
    site_stain,
    stage_class_mix,
    stage_classes,
    stage_tissue,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "fedcl" / "scenarios"
SMALL = {"image_size": 32, "train_tiles": 6, "test_tiles": 4}


def _config(scenario, **values):
    """The config of ``scenario`` with ``values`` (field names), as a run builds it."""
    return load_config({"scenario": scenario} | {k.replace("_", "-"): v for k, v in values.items()})


def drift(**changes):
    return _config("client-drift", **(SMALL | changes))


def staged(**changes):
    return _config(
        "catastrophic-forgetting", **(SMALL | {"stages": 3, "rounds_per_stage": 4} | changes)
    )


@pytest.mark.parametrize("name", list(SCENARIOS.builtin))
def test_every_builtin_scenario_has_an_example_file(name):
    config = from_toml(EXAMPLES / f"{name}.toml")
    assert config.scenario == name


def test_same_seed_same_data_bit_for_bit_and_different_seeds_differ():
    a = scenario_of(drift(seed=3)).train_dataset(0, 1)
    b = scenario_of(drift(seed=3)).train_dataset(0, 1)
    c = scenario_of(drift(seed=4)).train_dataset(0, 1)
    assert a.images.tobytes() == b.images.tobytes() and a.masks.tobytes() == b.masks.tobytes()
    assert a.images.tobytes() != c.images.tobytes()


@pytest.mark.parametrize(
    ("clients", "ratio", "count"),
    [(5, 0.4, 2), (10, 0.5, 5), (4, 0.0, 0), (3, 1.0, 3), (7, 0.3, 2)],
)
def test_drifted_hospitals_are_exactly_the_configured_fraction(clients, ratio, count):
    config = drift(clients=clients, drift_ratio=ratio)
    chosen = scenario_of(config).drifted_hospitals()
    assert len(chosen) == count and len(set(chosen)) == count
    assert all(0 <= h < clients for h in chosen)
    assert scenario_of(RunConfig(clients=clients)).drifted_hospitals() == ()  # iid: nobody


def test_drift_starts_at_the_configured_round():
    config = drift(drift_start_round=3)
    h = scenario_of(config).drifted_hospitals()[0]
    assert [scenario_of(config).is_drifted(h, r) for r in (1, 2, 3, 4)] == [
        False,
        False,
        True,
        True,
    ]
    clean = next(
        i for i in range(config.clients) if i not in scenario_of(config).drifted_hospitals()
    )
    assert not scenario_of(config).is_drifted(clean, 4)
    assert scenario_of(config).train_dataset(h, 2).images.tobytes() == (
        hospital_dataset(config, h, "train").images.tobytes()
    )


def _pair(kind, strength=1.0):
    config = drift(drift_kind=kind, drift_strength=strength)
    h = scenario_of(config).drifted_hospitals()[0]
    return (
        hospital_dataset(config, h, "train"),
        hospital_dataset(config, h, "train", drifted=True),
    )


def test_stain_drift_re_renders_the_same_tissue():
    clean, shifted = _pair("stain")
    np.testing.assert_array_equal(clean.masks, shifted.masks)
    assert np.abs(clean.images.astype(int) - shifted.images.astype(int)).mean() > 10


def test_stain_drift_is_as_visible_for_every_seed():
    # typical in the pixels, not in stain parameters: a typical-norm parameter shift left
    # seed 2's drifted hospitals 12 and 22 grey levels from their clean tiles, seed 0's 57
    changes = []
    for seed in range(6):
        config = drift(seed=seed, train_tiles=12, image_size=64)
        for h in scenario_of(config).drifted_hospitals():
            clean = hospital_dataset(config, h, "train").images.astype(float)
            shifted = hospital_dataset(config, h, "train", drifted=True).images.astype(float)
            changes.append(np.abs(clean - shifted).mean())
    assert min(changes) > 20 and max(changes) < 1.3 * min(changes), changes


def test_typical_shift_has_the_typical_visible_size_in_a_random_direction():
    tissue = typical_tissue()
    a = typical_shift(Stain(), np.random.default_rng(1), 1.2)
    b = typical_shift(Stain(), np.random.default_rng(2), 1.2)
    assert a != b
    for stain in (a, b):
        assert visible_change(Stain(), stain, tissue) == pytest.approx(typical_change(1.2), 0.01)
    assert typical_change(0.3) < typical_change(0.6) < typical_change(1.2)
    assert typical_shift(Stain(), np.random.default_rng(1), 0.0) == Stain()


def test_blur_drift_removes_fine_detail():
    clean, shifted = _pair("blur")
    np.testing.assert_array_equal(clean.masks, shifted.masks)

    def detail(images):
        return np.abs(np.diff(images.astype(float), axis=2)).mean()

    assert detail(shifted.images) < 0.5 * detail(clean.images)


def test_noise_and_jpeg_drift_change_pixels_not_labels():
    for kind in ("noise", "jpeg"):
        clean, shifted = _pair(kind)
        np.testing.assert_array_equal(clean.masks, shifted.masks)
        assert np.abs(clean.images.astype(int) - shifted.images.astype(int)).mean() > 3, kind


def test_invert_drift_at_full_strength_is_the_colour_negative():
    clean, shifted = _pair("invert")
    np.testing.assert_array_equal(shifted.images, 255 - clean.images)


def test_label_noise_changes_labels_not_pixels():
    clean, shifted = _pair("label-noise", strength=0.7)
    np.testing.assert_array_equal(clean.images, shifted.images)
    assert (clean.masks != shifted.masks).mean() > 0.2


def _blocks(*blocks, size=10):
    """One ``size x size`` mask: background, then ``(value, rows, columns)`` blocks."""
    mask = np.zeros((1, size, size), np.uint8)
    for value, rows, columns in blocks:
        mask[0, rows, columns] = value
    return mask


EVERYWHERE = slice(None)


@pytest.mark.parametrize(
    ("mask", "strength", "expected"),
    [
        # strength 0.25: 1 px (cv2's 3 x 3 disk is a cross): a 6 x 6 region keeps 4 x 4
        (_blocks((2, slice(2, 8), slice(2, 8))), 0.25, _blocks((2, slice(3, 7), slice(3, 7)))),
        # the tile's edge is no boundary: only the side that meets the background moves
        (
            _blocks((1, EVERYWHERE, slice(0, 5))),
            0.25,
            _blocks((1, EVERYWHERE, slice(0, 4))),
        ),
        # IGNORE stays IGNORE, and the region shrinks away from it too
        (
            _blocks((IGNORE, EVERYWHERE, slice(0, 3)), (4, EVERYWHERE, slice(3, 10))),
            0.25,
            _blocks((IGNORE, EVERYWHERE, slice(0, 3)), (4, EVERYWHERE, slice(4, 10))),
        ),
        # strength 1: inflammatory is tumour; beside tumour it is one region, nothing erodes
        (
            _blocks((3, EVERYWHERE, slice(0, 5)), (1, EVERYWHERE, slice(5, 10))),
            1.0,
            _blocks((1, EVERYWHERE, EVERYWHERE)),
        ),
        # strength 0: nothing changes
        (
            _blocks((3, slice(2, 8), slice(2, 5)), (IGNORE, slice(2, 8), slice(5, 8))),
            0.0,
            _blocks((3, slice(2, 8), slice(2, 5)), (IGNORE, slice(2, 8), slice(5, 8))),
        ),
    ],
)
def test_biased_annotations_erode_regions_and_call_inflammation_tumour(mask, strength, expected):
    before = mask.copy()
    biased = bias_annotations(mask, strength, seed=0)
    np.testing.assert_array_equal(biased, expected)
    assert biased.dtype == np.uint8 and biased.shape == mask.shape
    np.testing.assert_array_equal(mask, before)  # a new array


def test_biased_annotations_are_deterministic_per_seed():
    from fedcl.data.synthetic import generate_tiles

    _, masks = generate_tiles(12, size=64, stain=Stain(), seed=np.random.SeedSequence(2))
    first, again = (bias_annotations(masks, 0.5, seed=1) for _ in range(2))
    np.testing.assert_array_equal(first, again)
    # the seed draws which inflammatory regions are called tumour; the rims are the rule's
    assert first.tobytes() != bias_annotations(masks, 0.5, seed=2).tobytes()


def test_annotation_drift_biases_training_masks_the_same_way_not_pixels_or_tests():
    config = drift(drift_kind="annotation", train_tiles=12, image_size=64)
    h = scenario_of(config).drifted_hospitals()[0]
    clean = hospital_dataset(config, h, "train")
    biased = scenario_of(config).train_dataset(h, config.rounds)
    np.testing.assert_array_equal(clean.images, biased.images)
    changed = clean.masks != biased.masks
    eroded = changed & (biased.masks == 0)
    confused = changed & (clean.masks == 3) & (biased.masks == 1)
    assert eroded.any() and confused.any()
    np.testing.assert_array_equal(changed, eroded | confused)  # no other kind of change
    # the clean test tiles are what the drifted hospital is scored on
    test = scenario_of(config).test_dataset(h, 0)
    np.testing.assert_array_equal(test.masks, hospital_dataset(config, h, "test").masks)
    later = scenario_of(config).train_dataset(h, config.drift_start_round + 1)
    assert biased.masks.tobytes() == later.masks.tobytes()  # every round of a stage alike


def test_annotation_drift_sees_the_tissue_before_a_stage_picks_its_classes():
    tiles = SMALL | {"image_size": 64, "train_tiles": 12}
    config = _config(
        "drift-and-forgetting",
        **(tiles | {"stages": 3, "rounds_per_stage": 1}),
        stage_shift="classes",
        drift_kind="annotation",
    )
    full = hospital_dataset(RunConfig(**tiles), 0, "train")  # every class labelled
    first = hospital_dataset(config, 0, "train", drifted=True)  # tumour and stroma annotated
    assert set(np.unique(first.masks)) <= {0, 1, 2}
    assert (first.masks[full.masks == 3] == 1).any()  # inflammation drawn as tumour
    second = hospital_dataset(config, 0, "train", stage=1, drifted=True)  # inflammatory only
    assert set(np.unique(second.masks)) <= {0, 3}


def test_annotation_drift_on_real_tiles_keeps_ignored_pixels(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for site in ("a", "b"):
        for i in range(2):
            codes = np.kron(rng.choice([0, 1, 2, 3], size=(8, 12)), np.ones((8, 8), int))
            codes[:16, :16] = 9  # an unannotated corner
            for folder, array in (("masks", codes), ("images", np.stack([codes * 40] * 3, -1))):
                (tmp_path / folder / site).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array.astype(np.uint8)).save(tmp_path / folder / site / f"{i}.png")
    config = drift(
        data=f"folder:{tmp_path}",
        label_map="9:ignore 0:background 1:tumor 2:stroma 3:inflammatory",
        clients=2,
        drift_ratio=0.5,
        drift_kind="annotation",
        train_tiles=8,
        test_tiles=2,
    )
    h = scenario_of(config).drifted_hospitals()[0]
    clean = hospital_dataset(config, h, "train")
    biased = hospital_dataset(config, h, "train", drifted=True)
    np.testing.assert_array_equal(clean.images, biased.images)
    assert (clean.masks == IGNORE).any()
    np.testing.assert_array_equal(clean.masks == IGNORE, biased.masks == IGNORE)
    assert (clean.masks != biased.masks).any()


def test_zero_strength_drift_changes_nothing_but_the_label():
    for kind in ("invert", "label-noise", "annotation"):
        clean, shifted = _pair(kind, strength=0.0)
        np.testing.assert_array_equal(clean.images, shifted.images)
        np.testing.assert_array_equal(clean.masks, shifted.masks)


def test_test_data_of_drifted_hospitals_is_clean():
    config = drift()
    h = scenario_of(config).drifted_hospitals()[0]
    assert scenario_of(config).test_dataset(h, 0).images.tobytes() == (
        hospital_dataset(config, h, "test").images.tobytes()
    )


def test_stage_boundaries_at_the_configured_rounds():
    config = staged()
    assert [scenario_of(config).stage_of(r) for r in range(0, 13)] == [0] * 5 + [1] * 4 + [2] * 4
    assert scenario_of(config).stage_end_rounds() == [4, 8, 12]
    assert scenario_of(drift()).stage_of(12) == 0 and scenario_of(
        drift(rounds=7)
    ).stage_end_rounds() == [7]


def test_the_stain_shift_changes_stain_and_class_mix_for_all_hospitals():
    config = staged(stage_shift="stain")
    assert stage_class_mix(config, 0) != stage_class_mix(config, 1)
    assert stage_class_mix(config, 1) != stage_class_mix(config, 2)
    for h in range(config.clients):
        assert site_stain(config, h, 0) != site_stain(config, h, 1)
    a = scenario_of(config).train_dataset(0, 4)
    b = scenario_of(config).train_dataset(0, 5)
    assert a.images.tobytes() != b.images.tobytes()
    assert site_stain(config.replace(site_stain=0.0), 2, 0) == Stain()


def test_tissue_shift_changes_architecture_not_stain_or_mix():
    config = staged()  # the default shift
    assert [stage_tissue(config, s) for s in range(3)] == list(TISSUES[:3])
    assert stage_tissue(staged(stage_shift="stain"), 2) == SOLID
    assert stage_tissue(drift(), 0) == SOLID
    for stage in (1, 2):
        assert stage_class_mix(config, stage) == stage_class_mix(config, 0)
        assert site_stain(config, 3, stage) == site_stain(config, 3, 0)
    # the same stream of tissue layouts, rendered as another architecture
    first, second = (scenario_of(config).test_dataset(0, s) for s in (0, 1))
    assert first.images.tobytes() != second.images.tobytes()


def test_every_tissue_architecture_renders_every_class():
    from fedcl.data.stain import Stain
    from fedcl.data.synthetic import generate_tiles

    for tissue in TISSUES:
        images, masks = generate_tiles(
            12, size=48, stain=Stain(), seed=np.random.SeedSequence(5), tissue=tissue
        )
        assert set(np.unique(masks)) == set(range(NUM_CLASSES)), tissue.name
        assert images.std() > 10, tissue.name  # not a flat colour


@pytest.mark.parametrize(
    ("stages", "groups"),
    [
        (1, [(1, 2, 3, 4)]),
        (2, [(1, 2), (3, 4)]),
        (3, [(1, 2), (3,), (4,)]),
        (4, [(1,), (2,), (3,), (4,)]),
    ],
)
def test_class_shift_gives_each_stage_its_own_classes(stages, groups):
    config = staged(stage_shift="classes", stages=stages, rounds=stages * 4)
    assert [stage_classes(config, s) for s in range(stages)] == groups
    assert stage_classes(staged(stage_shift="tissue"), 1) == (1, 2, 3, 4)


def test_class_shift_masks_call_other_classes_background_in_training_and_skip_them_in_tests():
    config = staged(stage_shift="classes")
    # the same tiles, every class labelled (a scenario without stage shifts)
    full = hospital_dataset(RunConfig(**SMALL), 0, "test", stage=1)
    train, test = (
        hospital_dataset(config, 0, "train", stage=1),
        scenario_of(config).test_dataset(0, 1),
    )
    assert set(np.unique(train.masks)) <= {0, 3} and 3 in train.masks
    assert set(np.unique(test.masks)) <= {0, 3, IGNORE}
    assert np.array_equal(test.masks == IGNORE, np.isin(full.masks, (1, 2, 4)))
    assert np.array_equal(test.images, full.images)  # the images are unchanged


def test_with_every_stage_public_the_reference_set_covers_every_tissue_from_round_one():
    from fedcl import seeds
    from fedcl.data.reference import _broad_mix_tiles

    config = staged(stage_shift="tissue", reference_size=6, public_stages="all")
    plain = staged(stage_shift="stain", reference_size=6, public_stages="all")
    solid = _broad_mix_tiles(plain, 6, seeds.REFERENCE, 1).images
    mixed = _broad_mix_tiles(config, 6, seeds.REFERENCE, 1).images
    same = [a.tobytes() == b.tobytes() for a, b in zip(solid, mixed, strict=True)]
    assert same == [True, False, False] * 2  # solid, glandular, infiltrative in turn


@pytest.mark.parametrize("which", ["reference", "root"])
def test_the_servers_public_tiles_never_hold_a_stage_before_it_starts(which):
    from fedcl.data import root_dataset

    def tiles(server_round, public_stages="current", **keys):
        config = staged(reference_size=6, root_tiles=6, public_stages=public_stages, **keys)
        if which == "reference":
            return reference_images(config, server_round).tobytes()
        return root_dataset(config, server_round).images.tobytes()

    config = staged()
    first, last = 1, config.rounds  # stage 0's first round; the last stage's last
    assert tiles(first) == tiles(last, "first") == tiles(first, "first")  # stage 0 only
    assert tiles(last) == tiles(first, "all") == tiles(last, "all")  # every stage
    assert tiles(first) != tiles(last)  # the set grows with the stages: the test can fail
    # the class shift: a public label names only the classes annotated so far
    if which == "root":
        config = staged(stage_shift="classes", root_tiles=6)
        known = {int(c) for c in np.unique(root_dataset(config, 1).masks)}
        assert known <= {0, *stage_classes(config, 0)}
        assert known != {0}  # some class of the first stage is labelled


def test_reference_set_is_disjoint_from_hospital_data():
    config = RunConfig(clients=3, reference_size=6, **SMALL)
    reference = {tile.tobytes() for tile in reference_images(config, 1)}
    assert len(reference) == 6
    for h in range(3):
        for split in ("train", "test"):
            tiles = hospital_dataset(config, h, split).images
            assert reference.isdisjoint(tile.tobytes() for tile in tiles)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"scenario": "client-drift", "drift-ratio": 1.5},
            "'drift-ratio' must be in 0..1, got 1.5",
        ),
        (
            {"scenario": "client-drift", "drift-kind": "blurr"},
            "unknown drift-kind 'blurr'.*Did you mean 'blur'",
        ),
        (
            {"drift-kind": "blur"},  # iid: nothing drifts
            (
                "key 'drift-kind' belongs to scenario client-drift or scenario "
                "drift-and-forgetting, not to strategy 'fedavg' or scenario 'iid'"
            ),
        ),
        (
            # an explicit, inconsistent value (without one, rounds is derived: test_cli)
            {
                "scenario": "catastrophic-forgetting",
                "stages": 2,
                "rounds-per-stage": 4,
                "rounds": 15,
            },
            "'rounds' must equal stages x rounds-per-stage = 2 x 4 = 8",
        ),
        ({"stages": 0}, "'stages' must be >= 1"),
        (
            {"scenario": "catastrophic-forgetting", "forgetting-strength": -0.1},
            "'forgetting-strength' must be in 0..1",
        ),
        (
            {"scenario": "catastrophic-forgetting", "stage-shift": "tisue"},
            "unknown stage-shift 'tisue'.*Did you mean 'tissue'",
        ),
        (
            {"scenario": "catastrophic-forgetting", "stage-shift": "classes", "stages": 5},
            "'stages' must be <= 4 with stage-shift 'classes'",
        ),
    ],
)
def test_invalid_scenario_values_name_file_key_value_and_range(tmp_path, values, message):
    import tomli_w

    path = tmp_path / "mine.toml"
    path.write_text(tomli_w.dumps(values))
    with pytest.raises(FedclError, match=f"{path}: .*{message}"):
        from_toml(path)


def test_all_drift_kinds_are_implemented():
    for kind in DRIFT_KINDS:
        clean, shifted = _pair(kind, strength=0.9)
        assert (
            clean.images.tobytes() != shifted.images.tobytes()
            or clean.masks.tobytes() != shifted.masks.tobytes()
        ), kind


# One changed value per key; the base is a drifting, staged run so every knob acts.
CHANGED = {
    "scenario": "catastrophic-forgetting",
    "clients": 4,
    "seed": 1,
    "image-size": 48,
    "train-tiles": 5,
    "test-tiles": 3,
    "site-stain": 0.3,
    "drift-ratio": 1.0,
    "drift-kind": "blur",
    "drift-strength": 0.3,
    "stages": 2,
    "stage-shift": "classes",
    "forgetting-strength": 0.3,
    # keys that must not touch the tiles (rounds-per-stage and drift-start-round decide
    # a round's stage and drift status, which the cache keys by themselves)
    "drift-start-round": 2,
    "model": "basic-unet",
    "lr": 0.01,
    "strategy": "dbc",
    "bn-stats": "running",
}


@pytest.mark.parametrize("key", sorted(CHANGED))
def test_the_keys_declared_as_shaping_data_are_the_ones_that_do(key):
    from fedcl.config import data_keys

    base = load_config(
        {
            "scenario": "drift-and-forgetting",
            # the number of stages shapes the class groups, not the stain stages
            "stage-shift": "classes" if key == "stages" else "stain",
            "image-size": 32,
            "train-tiles": 4,
            "test-tiles": 2,
            "rounds-per-stage": 1,
        }
    )
    values = base.to_mapping() | {key: CHANGED[key]}
    values["rounds"] = values["stages"] * values["rounds-per-stage"]
    changed = load_config(values, tolerate=is_builtin_key)  # another scenario: its own keys

    def tiles(config):  # every hospital's tiles in round 2 (stage 1), as the scenario says
        parts = []
        for hospital in range(4):
            train = scenario_of(config).train_dataset(hospital, 2)
            test = scenario_of(config).test_dataset(hospital, 1)
            parts += [train.images.tobytes(), train.masks.tobytes(), test.masks.tobytes()]
        return b"".join(parts)

    assert (tiles(changed) != tiles(base)) == (key in data_keys(base))


def test_the_stage_limits_the_config_checks_are_the_generators():
    # config checks them without importing the generators; these are the numbers
    assert MAX_STAGES == {"tissue": len(TISSUES), "classes": NUM_CLASSES - 1}


def test_a_users_scenario_plugs_in_by_dotted_path_or_entry_point(monkeypatch):
    from fedcl.config import data_keys
    from fedcl.scenarios import scenario_class

    config = _config("plugin_scenario:BlurredOddHospitals", clients=4, **SMALL)
    scenario = scenario_of(config)
    assert scenario.drifted_hospitals() == (1, 3) and scenario.drifting and not scenario.staged
    assert scenario.is_drifted(1, 2) and not scenario.is_drifted(1, 1)
    blurred, clean = scenario.train_dataset(1, 2), scenario.train_dataset(1, 1)
    assert blurred.images.tobytes() != clean.images.tobytes()
    assert np.array_equal(blurred.masks, clean.masks)
    # its own key, declared in its module: a key of its runs, checked by its declaration
    milder = _config("plugin_scenario:BlurredOddHospitals", blur_strength=0.2, clients=4, **SMALL)
    assert milder.to_mapping()["blur-strength"] == 0.2 and "blur-strength" in data_keys(milder)
    assert scenario_of(milder).train_dataset(1, 2).images.tobytes() != blurred.images.tobytes()
    with pytest.raises(FedclError, match="'blur-strength' must be in 0..1, got 2"):
        _config("plugin_scenario:BlurredOddHospitals", blur_strength=2)
    with pytest.raises(FedclError, match="unknown key 'blur-strength'"):
        _config("client-drift", blur_strength=0.2)  # a key of that scenario only

    class EntryPoint:
        name = "blurred"

        def load(self):
            from plugin_scenario import BlurredOddHospitals

            return BlurredOddHospitals

    monkeypatch.setattr("fedcl.plugins.entry_points", lambda group: [EntryPoint()])
    assert scenario_class("blurred").__name__ == "BlurredOddHospitals"
    assert scenario_of(_config("blurred", clients=4, **SMALL)).drifting


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("plugin_scenario:NotAScenario", "not a subclass of fedcl.scenarios.Scenario"),
        ("plugin_scenario:Nope", "has no 'Nope'"),
        ("client-drfit", "unknown scenario 'client-drfit'.*Did you mean 'client-drift'"),
    ],
)
def test_a_scenario_that_is_not_one_is_named_in_the_error(name, message):
    with pytest.raises(FedclError, match=message):
        load_config({"scenario": name})
