"""Trio lifetimes: the room manager (the one place effects are carried out), participant
sessions that outlive their connections, and the ports to the media plane and webhooks."""
