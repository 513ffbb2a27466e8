"""Class sessions: the teacher's Inference page leads, students' phones follow and guess the next token."""
