"""An EWS protocol simulator that the real exchangelib talks to over HTTP."""
