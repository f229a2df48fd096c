"""What every 3D exporter does: stream cases one at a time, refuse a case id twice."""

import pytest

from releases.records import DirSink, FormatError, LabelRecord
from tests.releases.synth3d import ATELECTASIS, FORMATS, META, export, make_affine, make_case


@pytest.mark.parametrize("module", FORMATS, ids=lambda m: m.NAME)
def test_streams_cases_one_at_a_time(tmp_path, module):
    affine = make_affine("axial")
    calls: list[int] = []
    pulled: list[str] = []

    def cases():
        for n, split in enumerate(["train", "val", "test", "train"]):
            # the exporter has finished every earlier case before it asks for this one
            assert calls == list(range(1, n + 1))
            case = make_case(
                tmp_path / "src",
                f"c{n}",
                split,
                affine,
                [("m", ATELECTASIS, {"text": "Atelectasis.", "category": "2b"})],
                extra=[LabelRecord(label_id=f"c{n}-box", text="box", kind="box", box=[0, 0, 0, 1, 1, 1])],
            )
            pulled.append(case.case_id)
            yield case

    sink = DirSink(tmp_path / "out")
    summary = module.export(cases(), sink, META, calls.append)
    sink.close()
    assert calls == [1, 2, 3, 4] and pulled == ["c0", "c1", "c2", "c3"]
    assert summary.cases == 4 and summary.labels == 4
    assert summary.skipped == [f"c{n}/c{n}-box: kind 'box' is not supported by this format" for n in range(4)]
    assert summary.files == len(sink.files)
    assert not (tmp_path / "out/.scratch").exists()


@pytest.mark.parametrize("module", FORMATS, ids=lambda m: m.NAME)
def test_a_case_id_twice_is_refused(tmp_path, module):
    case = make_case(tmp_path / "src", "twice", "train", make_affine("axial"), [])
    with pytest.raises(FormatError) as err:
        export(module, [case, case], tmp_path / "out")
    assert err.value.field == "twice.case_id"


# --- MONAI ------------------------------------------------------------------------------------------------
