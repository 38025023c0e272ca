"""A real SIP path for the telephony tests: Kamailio reporting calls to the generic webhook, SIPp
placing and answering them (see README.md and :mod:`.lab`)."""
