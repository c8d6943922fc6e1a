"""`make bench` writes its figures into docs/measurements.md, dated, with the machine."""
from simulator import bench


def test_the_page_has_the_bench_block():
    text = bench.MEASUREMENTS.read_text()
    assert text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1
    assert text.index(bench.BEGIN) < text.index(bench.END)


def test_refresh_replaces_only_the_block(tmp_path):
    page = tmp_path / "m.md"
    page.write_text(f"# M\n\nbefore\n{bench.BEGIN}\nold figures\n{bench.END}\nafter\n")
    assert bench.refresh_measurements("  cpython 9000 simulated s per wall s\n", page)
    text = page.read_text()
    assert "old figures" not in text and "cpython 9000 simulated s per wall s" in text
    assert text.startswith("# M\n\nbefore\n") and text.endswith(f"{bench.END}\nafter\n")
    assert "cores" in text and "Measured 20" in text  # the machine and the date
    assert bench.refresh_measurements("again\n", page) and "9000" not in page.read_text()


def test_a_page_without_markers_is_left_alone(tmp_path):
    page = tmp_path / "m.md"
    page.write_text("# M\n")
    assert not bench.refresh_measurements("figures\n", page)
    assert page.read_text() == "# M\n"
