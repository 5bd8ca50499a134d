"""Video frames at 1 fps, the JAX MTCNN against facenet-pytorch, face crops, bad media, MELD-sub filter."""

import pathlib

import av
import numpy as np
import pytest

from emohd_jax.vision import faces
from emohd_jax.errors import CorruptMediaError, NoFaceError, NoVideoStreamError
from emohd_jax.vision.faces import Detections, MTCNNDetector, crop_faces, extract_clip_faces, meld_sub_keep
from emohd_jax.models import mtcnn
from emohd_jax.vision.video_io import sample_frames

from tests.data_paths import DATA
CLIPS = ("1001_DFA_ANG_XX.flv", "1001_DFA_HAP_XX.flv", "1001_DFA_NEU_XX.flv")


@pytest.fixture(scope="module")
def cremad() -> pathlib.Path:
    if not (DATA / "cremad").is_dir():
        pytest.skip(f"CREMA-D samples not found at {DATA / 'cremad'}")
    return DATA / "cremad"


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return MTCNNDetector()


@pytest.fixture(scope="module")
def facenet():
    """facenet-pytorch's (mtcnn module, detect_face module, NMS used) or a skip saying why."""
    pytest.importorskip("torch")
    from emohd_jax.convert.mtcnn import import_facenet_reference

    try:
        return import_facenet_reference()
    except ImportError as err:
        pytest.skip(f"facenet-pytorch not importable as a reference: {err}")


def write_video(path: pathlib.Path, frames: np.ndarray, fps: int = 25) -> None:
    """frames: [n, h, w, 3] uint8 → a video file in the container that `path`'s suffix names."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        container.start_encoding()  # writes the header even when there is no frame
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


# ---- frames --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CLIPS)
@pytest.mark.parametrize("fps", [1.0, 4.0])
def test_cremad_frames_one_per_period_from_the_duration(cremad, name, fps):
    with av.open(str(cremad / name)) as container:
        duration = container.duration / 1e6  # ~1.9–2.2 s
    frames, times = sample_frames(cremad / name, fps=fps)
    assert frames.dtype == np.uint8 and frames.shape[1:] == (360, 480, 3)
    assert len(frames) == len(times) == round(duration * fps)
    # Each frame is the one nearest the middle of its period (the video runs at 29.97 fps).
    np.testing.assert_allclose(times, (np.arange(len(times)) + 0.5) / fps, atol=0.5 / 29.97 + 1e-6)


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv"])
@pytest.mark.parametrize("seconds, expected", [(3.2, 3), (3.72, 4), (0.2, 1)])
def test_frame_count_of_written_videos(tmp_path, suffix, seconds, expected):
    n = round(seconds * 25)
    frames = np.broadcast_to((np.arange(n, dtype=np.uint8) * 2)[:, None, None, None], (n, 32, 48, 3)).copy()
    write_video(tmp_path / f"clip{suffix}", frames)
    sampled, times = sample_frames(tmp_path / f"clip{suffix}")
    assert sampled.shape == (expected, 32, 48, 3)
    assert np.all(np.diff(times) > 0.9)


# ---- the networks against facenet-pytorch's -----------------------------------------------------

def test_nets_match_facenet_pytorch(facenet):
    import torch
    from flax import nnx

    facenet_mtcnn, _, _ = facenet
    ours = mtcnn.load()
    rng = np.random.default_rng(0)
    cases = [(facenet_mtcnn.PNet(), ours.pnet, (2, 37, 45)),  # odd sizes exercise ceil-mode pooling
             (facenet_mtcnn.RNet(), ours.rnet, (7, 24, 24)),
             (facenet_mtcnn.ONet(), ours.onet, (7, 48, 48))]
    for theirs, mine, (n, h, w) in cases:
        pixels = rng.uniform(0, 255, (n, h, w, 3)).astype(np.float32)
        with torch.no_grad():
            expected = [t.numpy() for t in theirs.eval()(torch.from_numpy(pixels).permute(0, 3, 1, 2) / 128 - 127.5 / 128)]
        got = [np.asarray(a) for a in nnx.jit(lambda net, x: net(mtcnn.normalize(x)))(mine, pixels)]
        if len(expected) == 2:  # PNet / RNet: (offsets, softmax over [background, face])
            offsets, probs = expected
            if offsets.ndim == 4:
                offsets, probs = offsets.transpose(0, 2, 3, 1), probs.transpose(0, 2, 3, 1)
            expected = [offsets, probs[..., 1]]
        else:  # ONet: (offsets, landmarks, softmax)
            expected = [expected[0], expected[1], expected[2][:, 1]]
        for a, b in zip(got, expected):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-4)


def two_face_frames(cremad) -> np.ndarray:
    """[2, 360, 480, 3]: each frame the face halves of two clips side by side (two faces per frame)."""
    halves = [sample_frames(cremad / name)[0][:, :, 120:360] for name in CLIPS]  # faces lie at x ≈ 165–265
    return np.stack([np.concatenate([halves[0][i], halves[1 + i][i]], axis=1) for i in range(2)])


def test_detector_matches_facenet_detect_face_box_for_box(cremad, detector, facenet):
    import torch

    facenet_mtcnn, facenet_detect, nms = facenet
    frames = np.concatenate([sample_frames(cremad / CLIPS[0])[0], two_face_frames(cremad)])[1:3]
    with torch.no_grad():
        boxes, points = facenet_detect.detect_face(frames, 20, facenet_mtcnn.PNet(), facenet_mtcnn.RNet(),
                                                   facenet_mtcnn.ONet(), [0.6, 0.7, 0.7], 0.709, "cpu")
    ours = detector.detect(frames)
    assert [len(d.probs) for d in ours] == [1, 2], nms
    for mine, theirs, landmarks in zip(ours, boxes, points):
        np.testing.assert_allclose(mine.boxes, theirs[:, :4], atol=1e-2, err_msg=nms)
        np.testing.assert_allclose(mine.probs, theirs[:, 4], atol=1e-4, err_msg=nms)
        np.testing.assert_allclose(mine.landmarks, landmarks, atol=1e-2, err_msg=nms)


# ---- clips --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CLIPS)
def test_cremad_face_in_every_sampled_frame(cremad, detector, name):
    clip = extract_clip_faces(cremad / name, detector, size=224)
    assert clip.n_frames_sampled == 2 and clip.n_frames_without_face == 0
    assert clip.crops.shape == (2, 224, 224, 3) and clip.crops.dtype == np.uint8
    np.testing.assert_allclose(clip.timestamps_s, [0.5, 1.5], atol=0.02)
    assert all(len(d.probs) == 1 and d.probs[0] > 0.99 for d in clip.detections)
    # The speaker fills the middle of the frame: a 95–100 px wide face box around x ≈ 215.
    box = clip.detections[0].boxes[0]
    assert 80 < box[2] - box[0] < 120 and 190 < (box[0] + box[2]) / 2 < 240
    assert meld_sub_keep(clip.detections)


def test_crop_size_and_most_confident_switch(cremad, detector):
    frames = two_face_frames(cremad)
    detections = detector.detect(frames)
    largest, index = crop_faces(frames, detections, size=112)
    confident, _ = crop_faces(frames, detections, size=112, select="most_confident")
    assert largest.shape == (2, 112, 112, 3) and index.tolist() == [0, 1]
    assert not meld_sub_keep(detections)  # two confident faces in every frame
    for d, a, b in zip(detections, largest, confident):
        areas = np.prod(d.boxes[:, 2:] - d.boxes[:, :2], axis=1)
        assert np.array_equal(a, b) == (np.argmax(areas) == np.argmax(d.probs))


# ---- crop geometry and frames without a face -----------------------------------------------------

def test_crop_is_the_box_square_with_margin_and_faceless_frames_are_dropped():
    frames = np.zeros((3, 120, 160, 3), np.uint8)
    frames[1, 20:80, 40:100] = 255  # a 60 × 60 white square
    no_face = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
    square = Detections(np.array([[40, 20, 100, 80]], np.float32), np.array([0.99], np.float32), np.zeros((1, 5, 2), np.float32))
    crops, index = crop_faces(frames, [no_face, square, no_face], size=30, margin=0.0)
    assert index.tolist() == [1] and crops.shape == (1, 30, 30, 3)
    assert crops[0, 1:-1, 1:-1].min() == 255
    crops, _ = crop_faces(frames, [no_face, square, no_face], size=30, margin=1.0)  # the square is the middle half
    assert crops[0, 9:21, 9:21].min() == 255 and crops[0, :6].max() == 0 and crops[0, :, :6].max() == 0


def test_frames_smaller_than_the_smallest_face_have_no_detections(detector):
    detections = detector.detect(np.zeros((3, 16, 16, 3), np.uint8))
    assert [len(d.probs) for d in detections] == [0, 0, 0]
    assert detections[0].boxes.shape == (0, 4) and detections[0].landmarks.shape == (0, 5, 2)


def test_meld_sub_keep_counts_frames_with_at_most_one_confident_face():
    def frame(*probs):
        return Detections(np.zeros((len(probs), 4), np.float32), np.asarray(probs, np.float32), np.zeros((len(probs), 5, 2)))

    one, two, unsure_second = frame(0.99), frame(0.99, 0.97), frame(0.99, 0.80)
    assert meld_sub_keep([one, one, two])
    assert meld_sub_keep([one, unsure_second, two])
    assert not meld_sub_keep([one, two, two])
    assert meld_sub_keep([two, two, one], max_faces=2)
    assert not meld_sub_keep([one, unsure_second, two], min_prob=0.5)
    assert not meld_sub_keep([one, two, two, two], min_fraction=0.5)
    assert meld_sub_keep([one, one, two, two], min_fraction=0.5)
    assert not meld_sub_keep([])


# ---- bad media ----------------------------------------------------------------------------------

def test_random_bytes_are_corrupt_media(tmp_path, detector):
    path = tmp_path / "broken.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(20_000))
    with pytest.raises(CorruptMediaError, match="broken.mp4"):
        extract_clip_faces(path, detector)


def test_a_missing_file_is_not_bad_media(tmp_path):
    with pytest.raises(FileNotFoundError):
        sample_frames(tmp_path / "missing.mp4")


def test_audio_only_file_has_no_video_stream(cremad, detector):
    with pytest.raises(NoVideoStreamError, match="1002_DFA_ANG_XX.mp3"):
        extract_clip_faces(cremad / "1002_DFA_ANG_XX.mp3", detector)


def test_blank_wall_has_no_face(tmp_path, detector):
    path = tmp_path / "wall.mp4"
    write_video(path, np.full((50, 360, 480, 3), 128, np.uint8))  # 2 s of flat grey
    with pytest.raises(NoFaceError, match="wall.mp4.*2 frames"):
        extract_clip_faces(path, detector)


def test_a_video_stream_without_frames_is_corrupt(tmp_path):
    path = tmp_path / "empty.avi"
    write_video(path, np.zeros((0, 32, 32, 3), np.uint8))
    with pytest.raises(CorruptMediaError, match="empty.avi: the video stream has no decodable frame"):
        sample_frames(path)


def test_detector_interface_is_what_extraction_needs(cremad):
    class NoFaces:
        def detect(self, frames):
            return [Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))) for _ in frames]

    detector: faces.FaceDetector = NoFaces()
    with pytest.raises(NoFaceError, match=CLIPS[0]):
        extract_clip_faces(cremad / CLIPS[0], detector)


def test_an_audio_only_utterance_is_reported_by_its_file():
    from emohd_jax.extract import Utterance
    from emohd_jax.vision.extract import VideoFaceExtractor

    utterance = Utterance(uid="cremad/1002_DFA_SAD_XX", dataset="cremad", split="test", label=3, text="x",
                          audio="/data/cremad/1002_DFA_SAD_XX.mp3", video=None)
    with pytest.raises(NoVideoStreamError, match=r"^/data/cremad/1002_DFA_SAD_XX.mp3: no video stream"):
        VideoFaceExtractor.records(None, utterance)  # refused before any model is needed
