"""Plugins shipped with crmcore, each a package discovered through the crm.plugins entry points."""
