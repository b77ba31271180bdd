"""``worldstore view``: a local web viewer of a world, following its writer's commits."""

from __future__ import annotations

import click


from .options import colormap_option, path_argument, sigint


@click.command(short_help="Watch a world in the browser (a local web viewer).")
@path_argument
@click.option("--port", type=click.IntRange(min=0, max=65535), default=0, show_default=True,
              help="Port to serve on, on 127.0.0.1 (0: a free one, printed).")
@click.option("--open", "open_browser", is_flag=True, help="Open the viewer in the web browser too.")
@colormap_option
def view(path, port, open_browser, colormap):
    """Serve a viewer of the world file PATH on http://127.0.0.1:PORT/ until Ctrl-C. Changes nothing.

    It reads PATH as an HDF5 SWMR reader, so a running simulation (worldstore demo, or a writer opened with
    swmr=True) is never slowed or blocked, and the page follows its commits. It shows every layer with a
    legend, zooms to full resolution, moves over the snapshots with a slider, and shows the values of every
    layer under the mouse. Needs the view extra: pip install 'worldstore[view]'.

    Example:
      worldstore view farm.h5 --port 8000
    """
    from worldstore.view import serve

    def ready(url: str) -> None:
        click.echo(f"serving {path} at {url} (Ctrl-C stops)")

    with sigint.anywhere(f"the viewer stopped; {path} was only read"):
        serve(path, port=port, open_browser=open_browser, colormap=colormap, on_ready=ready)
