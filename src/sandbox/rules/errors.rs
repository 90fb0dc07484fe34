//! The error catalogue: Graph error bodies, titles and default details of
//! the codes the sandbox answers, as Meta words them.

/// Graph error codes the sandbox emits.
pub(crate) mod code {
    pub(crate) const SERVICE_UNAVAILABLE: i64 = 2;
    pub(crate) const INVALID_PARAMETER: i64 = 100;
    pub(crate) const ACCESS_TOKEN: i64 = 190;
    pub(crate) const UNKNOWN_PATH: i64 = 2500;
    pub(crate) const EXPERIMENT: i64 = 130_472;
    pub(crate) const THROUGHPUT: i64 = 130_429;
    pub(crate) const SOMETHING_WENT_WRONG: i64 = 131_000;
    pub(crate) const MISSING_PARAMETER: i64 = 131_008;
    pub(crate) const UNDELIVERABLE: i64 = 131_026;
    pub(crate) const HEALTHY_ECOSYSTEM: i64 = 131_049;
    pub(crate) const MARKETING_OPT_OUT: i64 = 131_050;
    pub(crate) const PAIR_RATE: i64 = 131_056;
    pub(crate) const MAINTENANCE: i64 = 131_057;
    pub(crate) const NOT_MARKETING: i64 = 134_100;
    pub(crate) const MM_UNAVAILABLE: i64 = 134_102;
    pub(crate) const PARAM_COUNT: i64 = 132_000;
    pub(crate) const TEMPLATE_MISSING: i64 = 132_001;
    pub(crate) const TEMPLATE_PAUSED: i64 = 132_015;
    pub(crate) const TEMPLATE_DISABLED: i64 = 132_016;
}

/// Every code the sandbox can answer synchronously, so stats can count them
/// with one atomic each (rules may add more).
pub(crate) const KNOWN_API_CODES: &[i64] = &[
    code::INVALID_PARAMETER,
    code::ACCESS_TOKEN,
    code::UNKNOWN_PATH,
    code::THROUGHPUT,
    code::MISSING_PARAMETER,
    code::PAIR_RATE,
    code::MAINTENANCE,
    code::NOT_MARKETING,
    code::MM_UNAVAILABLE,
    code::PARAM_COUNT,
    code::TEMPLATE_MISSING,
    code::TEMPLATE_PAUSED,
    code::TEMPLATE_DISABLED,
];

/// Title of a code as Meta words it (the Graph `message` is `(#code) title`).
pub(crate) fn title(code: i64) -> &'static str {
    match code {
        code::SERVICE_UNAVAILABLE => "Service temporarily unavailable",
        code::INVALID_PARAMETER => "Invalid parameter",
        code::ACCESS_TOKEN => "Invalid OAuth access token - Cannot parse access token",
        code::UNKNOWN_PATH => "Unknown path components",
        code::EXPERIMENT => "User's number is part of an experiment",
        code::THROUGHPUT => "Rate limit hit",
        code::SOMETHING_WENT_WRONG => "Something went wrong",
        code::MISSING_PARAMETER => "Required parameter is missing",
        code::UNDELIVERABLE => "Message undeliverable",
        code::HEALTHY_ECOSYSTEM => {
            "This message was not delivered to maintain healthy ecosystem engagement."
        }
        code::MARKETING_OPT_OUT => {
            "Unable to deliver the message. This recipient has chosen to stop receiving \
             marketing messages on WhatsApp from your business."
        }
        code::PAIR_RATE => "(Business Account, Consumer Account) pair rate limit hit",
        code::MAINTENANCE => "Account in maintenance mode",
        code::NOT_MARKETING => "Only marketing messages are supported",
        code::MM_UNAVAILABLE => "Template is not available for Marketing Messages API",
        code::PARAM_COUNT => "Number of parameters does not match the expected number of params",
        code::TEMPLATE_MISSING => "Template name does not exist in the translation",
        code::TEMPLATE_PAUSED => "Template is Paused",
        code::TEMPLATE_DISABLED => "Template is Disabled",
        131_047 => "Re-engagement message",
        131_048 => "Spam rate limit hit",
        131_051 => "Unsupported message type",
        _ => "Message failed to send",
    }
}

/// Default `error_data.details` for a code.
pub(crate) fn default_details(code: i64) -> &'static str {
    match code {
        code::SERVICE_UNAVAILABLE => "Temporary downtime or overload; retry later.",
        code::EXPERIMENT => "The message was not sent because this user is part of an experiment.",
        code::THROUGHPUT => "Cloud API message throughput has been reached.",
        code::SOMETHING_WENT_WRONG => "Message failed to send due to an unknown error.",
        code::UNDELIVERABLE => {
            "Unable to deliver message: the number may not be a WhatsApp user, may not have \
             accepted the latest terms, or may run an outdated WhatsApp version."
        }
        code::HEALTHY_ECOSYSTEM => {
            "The message was not delivered to keep the user's marketing engagement healthy."
        }
        code::MARKETING_OPT_OUT => "The recipient stopped marketing messages from this business.",
        code::PAIR_RATE => {
            "Message failed to send because there were too many messages sent from this \
             phone number to the same phone number in a short period of time."
        }
        code::MAINTENANCE => {
            "The business account is in maintenance mode, e.g. while its throughput is \
             being upgraded."
        }
        _ => title(code),
    }
}

/// HTTP status Meta answers a synchronous error code with.
pub(crate) fn http_status(code: i64) -> u16 {
    match code {
        code::ACCESS_TOKEN => 401,
        code::SOMETHING_WENT_WRONG => 500,
        code::SERVICE_UNAVAILABLE => 503,
        code::MM_UNAVAILABLE => 500,
        _ => 400,
    }
}

/// An error the simulated Graph API answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) code: i64,
    pub(crate) subcode: Option<i64>,
    pub(crate) details: String,
}

impl ApiError {
    pub(crate) fn new(code: i64, details: impl Into<String>) -> Self {
        Self {
            code,
            subcode: None,
            details: details.into(),
        }
    }

    pub(crate) fn with_default_details(code: i64) -> Self {
        Self::new(code, default_details(code))
    }

    pub(crate) fn http_status(&self) -> u16 {
        http_status(self.code)
    }
}

/// Why a send request is malformed; the `Display` text is `error_data.details`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PayloadError {
    #[error("request body is not valid JSON for a message: {0}")]
    Json(String),
    #[error("the parameter {0} is required")]
    Required(&'static str),
    #[error("messaging_product must be \"whatsapp\", got {0:?}")]
    MessagingProduct(String),
    #[error("recipient_type must be \"individual\", got {0:?}")]
    RecipientType(String),
    #[error("to {0:?} is not a phone number (7 to 15 digits, optional leading +)")]
    Phone(String),
    #[error("recipient {0:?} is not a business-scoped user id (a country code, a period, then letters and digits)")]
    UserId(String),
    #[error("the sandbox sends only type \"template\", got {0:?}")]
    MessageType(String),
    #[error("product_policy must be CLOUD_API_FALLBACK or STRICT, got {0:?}")]
    ProductPolicy(String),
    #[error("biz_opaque_callback_data is {0} bytes, the limit is 512")]
    BizOpaqueTooLong(usize),
    #[error("template.components[{index}]: unknown component type {kind:?}")]
    ComponentType { index: usize, kind: String },
    #[error("template.components has more than one {0} component")]
    DuplicateComponent(&'static str),
    #[error("template.components[{index}]: button needs sub_type and index 0-9")]
    Button { index: usize },
    #[error("template.components[{index}].parameters[{param}]: unknown parameter type {kind:?}")]
    ParameterType {
        index: usize,
        param: usize,
        kind: String,
    },
    #[error(
        "template.components[{index}].parameters[{param}]: parameter of type {kind} has no value"
    )]
    ParameterValue {
        index: usize,
        param: usize,
        kind: String,
    },
    #[error("template.components[{index}]: {kind} component has an empty parameters array")]
    EmptyParameters { index: usize, kind: String },
    #[error("template {name:?} expects {expected} body parameters, the request gives {given}")]
    ParameterCount {
        name: String,
        expected: usize,
        given: usize,
    },
    #[error("template {0:?} does not exist in the translation")]
    UnknownTemplate(String),
    #[error("template {0:?} is paused")]
    PausedTemplate(String),
}

impl PayloadError {
    /// The Graph code for this defect. Shape errors (missing or mistyped
    /// fields, unknown types) are 100 "Invalid parameter", as Graph answers
    /// them; a parameter of a known type without a value is 131008; a body
    /// parameter count that cannot match a template (an empty parameters
    /// array, or a count different from a configured template) is 132000.
    pub(crate) fn code(&self) -> i64 {
        match self {
            Self::ParameterValue { .. } => code::MISSING_PARAMETER,
            Self::EmptyParameters { .. } | Self::ParameterCount { .. } => code::PARAM_COUNT,
            Self::UnknownTemplate(_) => code::TEMPLATE_MISSING,
            Self::PausedTemplate(_) => code::TEMPLATE_PAUSED,
            _ => code::INVALID_PARAMETER,
        }
    }
}

impl From<PayloadError> for ApiError {
    fn from(e: PayloadError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}
