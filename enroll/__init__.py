"""Staff enrolment of seniors' faces (meal-enroll)."""
