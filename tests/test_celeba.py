"""CelebA: a tiny CelebA-format directory built here, read by the real torchvision loader
through prepare_celeba (balance, held-out class, h, images, seeds), the refusals of a
missing or malformed directory, the CLI, and one tiny training on the prepared file."""

import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conceptspace.celeba import ROOT_KEY, class_h, prepare_celeba
from conceptspace.checkpoints import load_checkpoint
from conceptspace.cli import main
from conceptspace.concepts import CLASSES
from conceptspace.config import load_config
from conceptspace.io import ConceptspaceError
from conceptspace.render import concept_labels, load_dataset, save_dataset
from conceptspace.train import train_run
from conftest import REPO, SMOKE

# The official header of list_attr_celeba.txt.
ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses "
    "Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache "
    "Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
    "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()
MALE, HAT = ATTRIBUTE_NAMES.index("Male"), ATTRIBUTE_NAMES.index("Wearing_Hat")
LANDMARKS = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
LANDMARKS += "rightmouth_x rightmouth_y"
# Images per class in each split (partition 0 train, 1 valid, 2 test).
PER_SPLIT = {0: 8, 1: 2, 2: 2}
# Each class's face colour: a test can tell from the pixels which class an image is.
COLORS = {"00": (200, 60, 60), "01": (60, 200, 60), "10": (60, 60, 200), "11": (200, 200, 60)}
# Portrait like CelebA's 178 x 218; the central square (rows 3-22) lies inside the face band.
WIDTH, HEIGHT, BORDER = 20, 26, 2

# The smoke preset's model, and its training cut to four steps.
SMOKE_CONFIG = load_config(REPO / "config.yaml", SMOKE)
MODEL = SMOKE_CONFIG["model"]
TRAINING = {
    **SMOKE_CONFIG["training"],
    "steps": 4,
    "batch_size": 8,
    "checkpoints": {"count": 2, "first": 2, "last": 4},
    "log_every": 2,
}
SMALL = dict(image_size=16, per_class=5, validation_fraction=0.2, verify_md5=False)


def build_celeba(root):
    """A CelebA directory in torchvision's layout and the official files' formats: every
    class in every split, rows interleaved; returns {filename: class}."""
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []  # (filename, partition, class)
    for partition, count in PER_SPLIT.items():
        for _ in range(count):
            rows += [(None, partition, name) for name in CLASSES]
    rows = [(f"{i:06d}.jpg", p, name) for i, (_, p, name) in enumerate(rows, start=1)]
    attributes, truth = [], {}
    for filename, _, name in rows:
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)  # black bands above and below
        image[BORDER : HEIGHT - BORDER] = COLORS[name]
        Image.fromarray(image).save(
            base / "img_align_celeba" / filename, quality=100, subsampling=0
        )
        values = rng.choice([-1, 1], size=len(ATTRIBUTE_NAMES))
        values[MALE], values[HAT] = (2 * int(d) - 1 for d in name)
        attributes.append(values)
        truth[filename] = name

    def write(name, lines, header=()):
        (base / name).write_text("".join(f"{line}\n" for line in (*header, *lines)))

    count = str(len(rows))
    write("list_eval_partition.txt", [f"{f} {p}" for f, p, _ in rows])
    write("identity_CelebA.txt", [f"{f} {i % 5 + 1}" for i, (f, _, _) in enumerate(rows)])
    bbox_header = (count, "image_id x_1 y_1 width height")
    write("list_bbox_celeba.txt", [f"{f} 95 71 226 313" for f, _, _ in rows], bbox_header)
    marks = "69 109 106 113 77 142 73 152 108 154"
    write(
        "list_landmarks_align_celeba.txt", [f"{f} {marks}" for f, _, _ in rows], (count, LANDMARKS)
    )
    # As the official file: the names line ends in a space, values are padded to width 2.
    attr_lines = [
        f + " " + " ".join(f"{v:2d}" for v in values) for (f, _, _), values in zip(rows, attributes)
    ]
    write("list_attr_celeba.txt", attr_lines, (count, " ".join(ATTRIBUTE_NAMES) + " "))
    return truth


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba_root")
    return root, build_celeba(root)


@pytest.fixture(scope="module")
def training_set(celeba):
    root, _ = celeba
    return prepare_celeba(root, seed=3, **SMALL)


def test_training_set_is_balanced_without_the_held_out_class(celeba, training_set):
    _, truth = celeba
    labels = training_set["label"]
    names = [CLASSES[label] for label in labels]
    assert sorted(set(names)) == ["00", "10", "11"]  # "01", female with hat, is held out
    assert all(names.count(name) == 5 for name in ("00", "10", "11"))
    assert training_set.metadata["unseen_class"] == "01"
    # Only training-split images, each labelled with its own attributes.
    assert all(filename.endswith(".jpg") for filename in training_set["filename"])
    assert [truth[f] for f in training_set["filename"]] == names
    assert all(int(f[:6]) <= 4 * PER_SPLIT[0] for f in training_set["filename"])
    # 20% of each class's five images is one validation image per class.
    for label in np.unique(labels):
        assert training_set["is_validation"][labels == label].sum() == 1


def test_h_is_the_two_attributes_one_hot(training_set):
    h, attributes = training_set["h"], training_set["attributes"]
    assert h.dtype == np.float32 and h.shape == (15, 4)
    np.testing.assert_array_equal(h[:, 1], attributes[:, 0])  # Male present
    np.testing.assert_array_equal(h[:, 3], attributes[:, 1])  # Wearing_Hat present
    np.testing.assert_array_equal(h[:, 0] + h[:, 1], 1)
    np.testing.assert_array_equal(h[:, 2] + h[:, 3], 1)
    # The probe's per-concept targets are the attributes.
    np.testing.assert_array_equal(concept_labels(training_set["label"]), attributes)
    assert class_h("01").tolist() == [1, 0, 0, 1]  # female, with hat
    assert training_set.metadata["h_layout"] == [
        "not_Male",
        "Male",
        "not_Wearing_Hat",
        "Wearing_Hat",
    ]


def test_images_are_the_cropped_resized_faces(training_set):
    images = training_set["images"]
    assert images.dtype == np.uint8 and images.shape == (15, 3, 16, 16)
    for image, label in zip(images, training_set["label"]):
        color = np.array(COLORS[CLASSES[label]])
        # The central square crop drops the black bands; JPEG and bicubic leave a few levels.
        assert np.abs(image.reshape(3, -1).mean(axis=1) - color).max() < 6
        assert image.min() > 40


def test_the_same_seed_gives_the_same_set_and_another_seed_another(celeba, training_set):
    root, _ = celeba
    again = prepare_celeba(root, seed=3, **SMALL)
    for name in ("images", "h", "label", "filename", "is_validation"):
        np.testing.assert_array_equal(again[name], training_set[name])
    other = prepare_celeba(root, seed=4, **SMALL)
    assert list(other["filename"]) != list(training_set["filename"])


def test_a_probe_set_includes_the_held_out_class(celeba):
    root, truth = celeba
    probe = prepare_celeba(
        root, seed=0, split="valid", include_held_out=True, **{**SMALL, "per_class": 2}
    )
    names = [CLASSES[label] for label in probe["label"]]
    assert sorted(names) == sorted(CLASSES * 2)
    assert [truth[f] for f in probe["filename"]] == names
    assert probe.metadata["kind"] == "celeba_probe_set"


def test_another_attribute_pair_and_held_out_class(celeba):
    root, _ = celeba
    dataset = prepare_celeba(root, ("Wearing_Hat", "Male"), held_out=(1, 1), **SMALL)
    assert sorted({CLASSES[label] for label in dataset["label"]}) == ["00", "01", "10"]
    assert dataset.metadata["h_layout"][1] == "Wearing_Hat"


def test_too_few_images_says_how_many_there_are(celeba):
    root, _ = celeba
    with pytest.raises(ConceptspaceError, match=r"too few images for 9 per class.*: 8"):
        prepare_celeba(root, **{**SMALL, "per_class": 9})


def test_unknown_attribute_lists_the_valid_ones(celeba):
    root, _ = celeba
    with pytest.raises(ConceptspaceError, match="no attribute 'Wearing_Hats'.*Wearing_Hat, "):
        prepare_celeba(root, ("Male", "Wearing_Hats"), **SMALL)


def test_missing_directory_lists_what_torchvision_expects(tmp_path):
    with pytest.raises(ConceptspaceError) as caught:
        prepare_celeba(tmp_path / "nowhere", **SMALL)
    message = str(caught.value)
    assert "does not exist" in message and ROOT_KEY in message
    for expected in (
        "celeba/img_align_celeba/",
        "list_attr_celeba.txt",
        "list_eval_partition.txt",
        "identity_CelebA.txt",
        "list_bbox_celeba.txt",
        "list_landmarks_align_celeba.txt",
    ):
        assert expected in message  # fmt: skip


def test_a_missing_file_is_named_and_the_celeba_folder_itself_recognised(tmp_path):
    build_celeba(tmp_path)
    (tmp_path / "celeba" / "identity_CelebA.txt").unlink()
    with pytest.raises(ConceptspaceError, match=r"lacks \['identity_CelebA.txt'\]"):
        prepare_celeba(tmp_path, **SMALL)
    with pytest.raises(ConceptspaceError, match="celeba folder itself: point at its parent"):
        prepare_celeba(tmp_path / "celeba", **SMALL)


def test_md5_check_names_the_files_that_differ_from_the_official_release(celeba):
    from torchvision.datasets import CelebA

    root, _ = celeba
    # torchvision checks the text files' md5s even with download=False, with a vague error:
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CelebA(str(root), split="train", target_type="attr", download=False)
    with pytest.raises(ConceptspaceError, match="list_attr_celeba.txt.*differ.*--no-verify-md5"):
        prepare_celeba(root, **{**SMALL, "verify_md5": True})


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda v: v[:-3], r"list_attr_celeba.txt is malformed at line 5: 40 fields instead of 41"),
        (lambda v: v[:-2] + "0", r"list_attr_celeba.txt is malformed at line 5: .*not -1 or 1"),
        (lambda v: v[:-2] + " x", r"list_attr_celeba.txt is malformed at line 5: .*not an integer"),
    ],
)
def test_a_malformed_attribute_file_names_the_line(tmp_path, edit, match):
    build_celeba(tmp_path)
    path = tmp_path / "celeba" / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines[4] = edit(lines[4])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConceptspaceError, match=match):
        prepare_celeba(tmp_path, **SMALL)


def test_files_listing_images_in_another_order_are_refused(tmp_path):
    build_celeba(tmp_path)
    path = tmp_path / "celeba" / "identity_CelebA.txt"
    lines = path.read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConceptspaceError, match="identity_CelebA.txt do not list the same images"):
        prepare_celeba(tmp_path, **SMALL)


def test_a_missing_or_damaged_image_is_named(tmp_path):
    build_celeba(tmp_path)
    folder = tmp_path / "celeba" / "img_align_celeba"
    (folder / "000001.jpg").unlink()
    with pytest.raises(ConceptspaceError, match=r"000001.jpg could not be read \(FileNotFound"):
        prepare_celeba(tmp_path, **{**SMALL, "per_class": 8})
    (folder / "000001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ConceptspaceError, match=r"000001.jpg could not be read \(Unidentified"):
        prepare_celeba(tmp_path, **{**SMALL, "per_class": 8})


def test_cli_writes_the_dataset_with_provenance(celeba, tmp_path, caplog):
    root, _ = celeba
    out = tmp_path / "celeba.npz"
    command = ["celeba", "--root", str(root), "--attributes", "Male", "Wearing_Hat",
               "--image-size", "16", "--per-class", "4", "--seed", "1", "--no-verify-md5",
               "--log-every", "4", "--out", str(out)]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert main(command) == 0
    assert "celeba: read 4/12 images" in caplog.text
    arrays, metadata = load_dataset(out)
    assert arrays["images"].dtype == np.float32 and arrays["images"].shape == (12, 3, 16, 16)
    assert 0.0 <= arrays["images"].min() and arrays["images"].max() <= 1.0
    assert metadata["provenance"]["seed"] == 1 and metadata["provenance"]["config_hash"]
    assert metadata["kind"] == "celeba_training_set"
    assert not list(tmp_path.glob(".*"))  # written atomically, no temporary left
    assert main([*command[:-2], "--root", str(tmp_path / "nowhere"), "--out", str(out)]) == 1


def test_one_tiny_training_on_the_prepared_file(training_set, tmp_path):
    path = tmp_path / "celeba.npz"
    save_dataset(path, training_set)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        manifest = train_run(MODEL, TRAINING, path, 0, tmp_path / "run", tmp_path / "manifest.json")
    finally:
        torch.set_num_threads(threads)
    assert manifest["final_step"] == 4 and math.isfinite(manifest["final_train_loss"])
    assert math.isfinite(manifest["final_validation_bpd"])
    vdm, metadata = load_checkpoint(manifest["final_checkpoint"]["path"])
    config = metadata["config"]
    assert config["h_dim"] == 4 and config["image_size"] == 16
    assert config["dataset"]["kind"] == "celeba_training_set"
    assert config["dataset"]["n_train"] == 12 and config["dataset"]["n_validation"] == 3
    # The trained model takes the held-out class's h, the prompt the study will use.
    h = torch.from_numpy(class_h("01"))[None]
    sample = vdm.sample(h, steps=2, generators=[torch.Generator().manual_seed(0)])
    assert sample.shape == (1, 3, 16, 16) and torch.isfinite(sample).all()
