"""The plots are written as PNG files at the path asked for, parent folders created."""

from llmft.core.plots import bar_plot, line_plot

PNG = b"\x89PNG\r\n\x1a\n"


def test_line_and_bar_plots_write_pngs(tmp_path):
    line = line_plot(tmp_path / "a" / "line.png", {"run": ([1, 2, 3], [0.5, 0.7, 0.9])}, title="t", xlabel="x",
                     ylabel="y", shade=(1, 2), right={"lr": ([1, 2, 3], [1e-3, 5e-4, 1e-4])})
    bars = bar_plot(tmp_path / "b" / "bars.png", ["g1", "g2"], {"r1": [0.1, 0.2], "r2": [0.3, 0.4]}, title="t",
                    ylabel="y", ylim=(0, 1))
    for path in (line, bars):
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 1000
