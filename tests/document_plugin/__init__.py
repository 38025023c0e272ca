"""A test plugin shipping a document template by convention: ``documents/<name>.<entity>.html``."""

import crmcore

PLUGIN = crmcore.PluginInfo(name="docplug", version="1.0", description="ships a welcome letter")


class DocumentPlugin:
    """Registered as an extra plugin; its folder's ``documents/`` holds its templates."""

    PLUGIN = PLUGIN
