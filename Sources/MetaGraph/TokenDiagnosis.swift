/// What a Graph error code and subcode mean for a stored token, in words an admin acts on.
public struct TokenDiagnosis: Sendable, Equatable {
    public let reason: String
    public let action: String

    public static func of(code: Int?, subcode: Int?) -> TokenDiagnosis {
        switch (code, subcode) {
        case (190, 458): return .init(reason: "the user removed the app", action: "re-authorise through `tokenvault meta login`")
        case (190, 459): return .init(reason: "the user's account is checkpointed", action: "the user must log in to Facebook first, then re-authorise")
        case (190, 460): return .init(reason: "the user changed their password", action: "re-authorise through `tokenvault meta login`")
        case (190, 463): return .init(reason: "the token expired", action: "log in again (`tokenvault meta login`); use `meta extend` before expiry next time")
        case (190, 464): return .init(reason: "the user has not confirmed their account", action: "the user confirms the account, then re-authorise")
        case (190, 467): return .init(reason: "the token is invalid", action: "get a new token")
        case (190, _), (102, _): return .init(reason: "the token expired, was revoked or is invalid", action: "get a new token")
        case (100, 36007): return .init(reason: "the verification code is invalid", action: "start the login again")
        case (let c?, _) where [4, 17, 32, 613].contains(c) || (80000...80014).contains(c): return .init(reason: "Meta is throttling the app", action: "nothing: the check is retried later")
        default: return .init(reason: "Meta reports the token as invalid", action: "check the token in the Access Token Debugger, then re-authorise")
        }
    }
}
