"""Enrollment: from one talking video to a relightable avatar bundle (ReliTalk, made real-time)."""
