"""mkdocs hook: the figures of examples/figures (which the README shows too) join the site as figures/<name>."""

from pathlib import Path

from mkdocs.structure.files import File

FIGURES = Path(__file__).resolve().parents[1] / "examples" / "figures"


def on_files(files, config):
    for figure in sorted(FIGURES.glob("*.png")):
        files.append(
            File(
                f"figures/{figure.name}",
                src_dir=str(FIGURES.parent),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files
