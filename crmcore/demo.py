"""Demo data (placeholder replaced below)."""


async def load_demo(deployment) -> None:
    return None
