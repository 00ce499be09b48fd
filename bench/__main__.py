"""`python -m bench` (what `make bench` runs), from the repository root."""
import click


@click.command()
def main():
    """Seed a database of its own, run gunicorn and a worker, measure bulk and single cancels,
    the set-based floor, the orders list and search, CPU per cancel and the worker's memory."""
    import config

    config.load_env_files()  # a .env, as the `flask` command would; the environment wins
    from bench.run import Settings, run

    raise SystemExit(run(Settings()))


if __name__ == "__main__":
    main(prog_name="python -m bench")
